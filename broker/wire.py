"""MQTT 3.1.1 bytes for the broker's hot path: splitting a read buffer into packets in place, and a PUBLISH
encoded once for every subscriber it goes to.

amqtt 0.12.1 builds packet objects field by field from a stream (five awaited reads per PUBLISH) and
serialises a new ``PublishPacket`` per subscriber. Here a chunk read from the socket is cut into
``(first byte, body)`` pairs without awaiting, and an outgoing message keeps its encoded topic (and, at
QoS 0, the whole packet) so fan-out costs a concatenation per subscriber. No I/O lives here.
"""

from __future__ import annotations

__all__ = [
    "MalformedPacket",
    "Outgoing",
    "PacketTooLarge",
    "ack",
    "parse_publish",
    "split_packets",
]

PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 3, 4, 5, 6, 7
PINGRESP = b"\xd0\x00"
_MAX_LENGTH_BYTES = 4  # MQTT-2.2.3: the remaining length takes at most four bytes


class MalformedPacket(ValueError):
    """Raised when the bytes break MQTT 3.1.1 framing or a PUBLISH's layout; the connection is closed."""


class PacketTooLarge(MalformedPacket):
    """Raised when a packet's remaining length is above the broker's ``max_packet_size``."""


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def split_packets(data: bytes, max_size: int) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete packets at the front of ``data`` as ``(first byte, body)``, and the incomplete rest.

    A packet above ``max_size`` is refused as soon as its length is known, before its body is buffered.
    """
    packets: list[tuple[int, bytes]] = []
    pos, end = 0, len(data)
    while end - pos >= 2:
        index, length, shift = pos + 1, 0, 0
        while True:
            if index >= end:
                return packets, data[pos:]
            byte = data[index]
            index += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= 7 * _MAX_LENGTH_BYTES:
                raise MalformedPacket("remaining length longer than four bytes")
        if length > max_size:
            raise PacketTooLarge(f"packet of {length} bytes is above the {max_size}-byte limit")
        if index + length > end:
            return packets, data[pos:]
        packets.append((data[pos], data[index : index + length]))
        pos = index + length
    return packets, data[pos:]


def parse_publish(first: int, body: bytes) -> tuple[str, int | None, bytes]:
    """Topic, packet id (``None`` at QoS 0) and payload of a PUBLISH; refuses what MQTT-4.7 forbids."""
    if len(body) < 2:
        raise MalformedPacket("PUBLISH without a topic")
    topic_end = 2 + ((body[0] << 8) | body[1])
    try:
        topic = body[2:topic_end].decode()
    except UnicodeDecodeError as exc:
        raise MalformedPacket("PUBLISH topic is not UTF-8") from exc
    if not topic or "#" in topic or "+" in topic or "\x00" in topic or topic_end > len(body):
        raise MalformedPacket(f"invalid PUBLISH topic {topic!r}")  # MQTT-3.3.2-2, 4.7.3-1
    if not first & 0x06:
        return topic, None, body[topic_end:]
    if topic_end + 2 > len(body):
        raise MalformedPacket("PUBLISH without its packet id")
    return topic, (body[topic_end] << 8) | body[topic_end + 1], body[topic_end + 2 :]


def packet_id(body: bytes) -> int:
    if len(body) != 2:
        raise MalformedPacket("acknowledgement without a two-byte packet id")
    return (body[0] << 8) | body[1]


def ack(kind: int, pid: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0b0010, MQTT-3.6.1-1) or PUBCOMP for ``pid``."""
    return bytes(((kind << 4) | (2 if kind == PUBREL else 0), 2, pid >> 8, pid & 0xFF))


class Outgoing:
    """One message on its way to subscribers, encoded lazily and once: the topic field for all, the
    whole packet for QoS 0 (the same bytes go to every QoS 0 subscriber)."""

    __slots__ = ("topic", "data", "_topic_field", "_plain")

    def __init__(self, topic: str, data: bytes) -> None:
        self.topic = topic
        self.data = data
        self._topic_field: bytes | None = None
        self._plain: bytes | None = None

    def packet(self, qos: int, pid: int = 0, *, retain: bool = False, dup: bool = False) -> bytes:
        """The PUBLISH for one subscriber (``pid`` only at QoS 1 and 2)."""
        if qos == 0 and not retain and self._plain is not None:
            return self._plain
        field = self._topic_field
        if field is None:
            encoded = self.topic.encode()
            field = self._topic_field = len(encoded).to_bytes(2, "big") + encoded
        first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
        if qos == 0:
            packet = bytes((first,)) + remaining_length(len(field) + len(self.data)) + field + self.data
            if not retain:
                self._plain = packet
            return packet
        return (
            bytes((first,))
            + remaining_length(len(field) + 2 + len(self.data))
            + field
            + pid.to_bytes(2, "big")
            + self.data
        )
