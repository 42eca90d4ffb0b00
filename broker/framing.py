"""MQTT framing checks that amqtt 0.12.1 lacks: the CONNECT read with a deadline and a size limit, protocol
version negotiation (the per-packet size limit after CONNECT is ``broker.wire``'s).

Kept apart from the broker so the byte-level rules can be read (and tested) without a socket.
"""

from __future__ import annotations

import asyncio

from amqtt.adapters import ReaderAdapter
from amqtt.errors import MQTTError

__all__ = [
    "CONNACK_UNACCEPTABLE_PROTOCOL",
    "ConnectRejected",
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
