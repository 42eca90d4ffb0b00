"""MQTT framing checks that amqtt 0.12.1 lacks: the CONNECT read with a deadline and a size limit, protocol
version negotiation, and a per-packet size limit for the rest of the connection.

Kept apart from the broker so the byte-level rules can be read (and tested) without a socket.
"""

from __future__ import annotations

import asyncio

from amqtt.adapters import ReaderAdapter
from amqtt.errors import MQTTError

__all__ = [
    "CONNACK_UNACCEPTABLE_PROTOCOL",
    "ConnectRejected",
    "PacketSizeGuard",
    "PacketTooLarge",
    "protocol_of",
    "read_connect",
]

CONNECT = 0x10
# CONNACK, remaining length 2, session present 0, return code 0x01 "unacceptable protocol version":
# what an MQTT 5 or 3.1 client needs to hear to fall back (mosquitto answers the same to what it refuses).
CONNACK_UNACCEPTABLE_PROTOCOL = b"\x20\x02\x00\x01"
_SUPPORTED = ("MQTT", 4)  # MQTT 3.1.1


class ConnectRejected(MQTTError):
    """Raised when the first packet is not an acceptable CONNECT; ``reply`` is sent before closing."""

    def __init__(self, message: str, reply: bytes | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class PacketTooLarge(MQTTError):
    """Raised when a packet's remaining length is above the configured maximum."""


async def _remaining_length(reader: ReaderAdapter) -> int:
    value, multiplier = 0, 1
    for _ in range(4):
        byte = await reader.read(1)
        if not byte:
            raise ConnectRejected("connection closed inside the fixed header")
        value += (byte[0] & 0x7F) * multiplier
        if not byte[0] & 0x80:
            return value
        multiplier *= 128
    raise ConnectRejected("malformed remaining length")


async def read_connect(reader: ReaderAdapter, *, timeout: float, max_size: int) -> bytes:
    """Read the whole first packet (fixed header included) within ``timeout`` seconds.

    A socket that sends nothing, something other than CONNECT, or a CONNECT above ``max_size`` is refused,
    so an idle or hostile connection cannot hold a listener slot.
    """
    try:
        async with asyncio.timeout(timeout):
            first = await reader.read(1)
            if not first:
                raise ConnectRejected("connection closed before CONNECT")
            if first[0] != CONNECT:
                raise ConnectRejected(f"first packet is type {first[0] >> 4}, not CONNECT")
            length = await _remaining_length(reader)
            if length > max_size:
                raise ConnectRejected(f"CONNECT of {length} bytes is above the {max_size}-byte limit")
            body = await reader.read(length) if length else b""
    except TimeoutError as exc:
        raise ConnectRejected(f"no CONNECT within {timeout:g}s") from exc
    except asyncio.IncompleteReadError as exc:
        raise ConnectRejected("connection closed inside CONNECT") from exc
    header = bytearray([CONNECT])
    n = length
    while True:
        byte, n = n % 128, n // 128
        header.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes(header) + body


def protocol_of(packet: bytes) -> tuple[str, int]:
    """Protocol name and level of a raw CONNECT (as returned by ``read_connect``)."""
    index = 1
    while packet[index] & 0x80:
        index += 1
    body = packet[index + 1 :]
    if len(body) < 3:
        raise ConnectRejected("CONNECT too short for a protocol name")
    name_length = int.from_bytes(body[:2], "big")
    if len(body) < 3 + name_length:
        raise ConnectRejected("CONNECT too short for its protocol name")
    name = body[2 : 2 + name_length].decode("utf-8", errors="replace")
    return name, body[2 + name_length]


def check_protocol(packet: bytes) -> None:
    """Accept MQTT 3.1.1; answer CONNACK 0x01 to MQTT 3.1 and 5 so they can fall back; close on others."""
    name, level = protocol_of(packet)
    if (name, level) == _SUPPORTED:
        return
    if (name, level) in (("MQTT", 5), ("MQIsdp", 3)):
        raise ConnectRejected(
            f"protocol {name} level {level} is not supported", CONNACK_UNACCEPTABLE_PROTOCOL
        )
    raise ConnectRejected(f"unknown protocol {name!r} level {level}")


class PacketSizeGuard(ReaderAdapter):
    """Wraps a connection's reader and refuses any packet whose remaining length exceeds ``max_size``.

    It follows the framing as the handler reads it (the fixed header byte by byte, then exactly the
    remaining length), so the check happens before the packet body is read into memory.
    """

    def __init__(self, inner: ReaderAdapter, max_size: int) -> None:
        self._inner = inner
        self._max = max_size
        self._state = "type"  # "type" -> "length" -> "body" -> "type"
        self._remaining = 0
        self._length = 0
        self._multiplier = 1

    async def read(self, n: int = -1) -> bytes:
        data = await self._inner.read(n)
        self._track(data)
        return data

    def _track(self, data: bytes) -> None:
        if self._state == "body":
            self._remaining -= len(data)
            if self._remaining <= 0:
                self._state = "type"
            return
        for byte in data:  # the fixed header arrives one byte per read
            if self._state == "type":
                self._state, self._length, self._multiplier = "length", 0, 1
                continue
            self._length += (byte & 0x7F) * self._multiplier
            self._multiplier *= 128
            if not byte & 0x80:
                if self._length > self._max:
                    raise PacketTooLarge(
                        f"packet of {self._length} bytes is above the {self._max}-byte limit"
                    )
                self._remaining = self._length
                self._state = "body" if self._length else "type"

    def feed_eof(self) -> None:
        self._inner.feed_eof()
