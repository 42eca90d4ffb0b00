"""MicroPython's ``usocket`` for CPython: sockets with the stream methods MicroPython code calls.

MicroPython sockets are streams: ``read(n)`` reads until it has ``n`` bytes or the peer closed (blocking),
or answers what is there, ``None`` for nothing yet (non-blocking); ``write(buf, n)`` writes the first ``n``
bytes. ``getaddrinfo`` answers IPv4 stream addresses, as the ports do.
"""

from __future__ import annotations

import socket as _socket

AF_INET = _socket.AF_INET
SOCK_STREAM = _socket.SOCK_STREAM


def getaddrinfo(host: str, port: int, af: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> list:
    return _socket.getaddrinfo(host, port, AF_INET, SOCK_STREAM)


class socket:  # MicroPython's name
    def __init__(self, af: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0) -> None:
        self._sock = _socket.socket(af, type, proto)

    def connect(self, address: tuple[str, int]) -> None:
        self._sock.connect(address)

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def write(self, buf: bytes | bytearray | str, length: int | None = None) -> int:
        data = buf.encode() if isinstance(buf, str) else bytes(buf)
        if length is not None:
            data = data[:length]
        self._sock.sendall(data)
        return len(data)

    def read(self, size: int) -> bytes | None:
        if self._sock.gettimeout() == 0.0:  # non-blocking: what is there, None for nothing yet
            try:
                return self._sock.recv(size)
            except BlockingIOError:
                return None
        chunks = []
        remaining = size
        while remaining:
            chunk = self._sock.recv(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._sock.close()
