"""Identifiers: UUIDv7 for rows users see (time-sortable, so ids order like the messages they name)."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id"]

# Random bytes are read from the OS a few kilobytes at a time: one getrandom() per id was a syscall per
# id, two per push, which showed in the push path's profile. Each id still takes fresh bytes, never reused.
_CHUNK = 4096
_pool = b""
_taken = 0
_lock = threading.Lock()  # ids are made on the event loop, but also by threads (a CLI, a test's seeding)


def _random_bytes(n: int) -> bytes:
    global _pool, _taken
    with _lock:
        if _taken + n > len(_pool):
            _pool, _taken = os.urandom(_CHUNK), 0
        start, _taken = _taken, _taken + n
        return _pool[start:_taken]


def new_id(now_ms: int | None = None) -> str:
    """Return a UUIDv7 string (RFC 9562): 48-bit Unix milliseconds, then 74 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(_random_bytes(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
