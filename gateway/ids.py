"""Identifiers: UUIDv7 for rows users see (time-sortable, so ids order like the messages they name)."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id"]

# Randomness is read from the OS a few kilobytes at a time, as hex digits: one getrandom() per id was a
# syscall per id, two per push, and building each id from integers or bytes took twice as long as slicing
# text. Each id still takes fresh digits, never reused.
_CHUNK = 4096  # bytes read at a time: 8192 hex digits
_pool = ""
_taken = 0
_lock = threading.Lock()  # ids are made on the event loop, but also by threads (a CLI, a test's seeding)
# The variant digit: 10 in its two high bits (RFC 9562), two random bits below.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _random_hex(n: int) -> str:
    global _pool, _taken
    with _lock:
        if _taken + n > len(_pool):
            _pool, _taken = os.urandom(_CHUNK).hex(), 0
        start, _taken = _taken, _taken + n
        return _pool[start:_taken]


def new_id(now_ms: int | None = None) -> str:
    """Return a UUIDv7 string (RFC 9562): 48-bit Unix milliseconds, then 74 random bits (12 of rand_a;
    the 62 of rand_b are the variant digit's two and 15 digits)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    stamp = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
    r = _random_hex(19)
    return f"{stamp[:8]}-{stamp[8:]}-7{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:]}"
