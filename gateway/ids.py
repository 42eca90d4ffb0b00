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
    """Return a UUIDv7 string (RFC 9562): 48-bit Unix milliseconds, then 74 random bits. Built from bytes
    and one ``hex()``: two per push, and integer arithmetic on a 128-bit value took twice as long."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = _random_bytes(10)
    raw = (ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big") + bytes(
        (0x70 | (rand[0] & 0x0F), rand[1], 0x80 | (rand[2] & 0x3F))  # version 7, rand_a, variant 10
    )
    text = (raw + rand[3:]).hex()  # rand_b's last 56 bits
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
