"""Identifiers: UUIDv7 for rows users see (time-sortable, so ids order like the messages they name)."""

from __future__ import annotations

import os
import time

__all__ = ["new_id"]

# The random parts of ids are made a few hundred at a time from one read of the OS's randomness: one
# getrandom() per id was a syscall per id, two per push, and formatting each id's random digits on its
# own took as long again as the rest of ``new_id``. Each id takes a part of its own, never reused; taking
# one (``list.pop``) is atomic, so threads (a CLI, a test's seeding) may make ids too.
_CHUNK = 4096  # random bytes per refill: 8192 hex digits, 431 random parts
_parts: list[str] = []
# The variant digit: 10 in its two high bits (RFC 9562), two random bits below.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
_stamped: tuple[int, str] = (-1, "")  # the last millisecond made an id in, and its text


def _random_parts() -> list[str]:
    """The 74 random bits of ids after the timestamp, as text: ``7rrr-Vrrr-rrrrrrrrrrrr`` (12 bits of
    rand_a, then rand_b's 62: the variant digit's two and 15 digits)."""
    digits = os.urandom(_CHUNK).hex()
    return [
        f"7{digits[i : i + 3]}-{_VARIANT[digits[i + 3]]}{digits[i + 4 : i + 7]}-{digits[i + 7 : i + 19]}"
        for i in range(0, len(digits) - 18, 19)
    ]


def new_id(now_ms: int | None = None) -> str:
    """Return a UUIDv7 string (RFC 9562): 48-bit Unix milliseconds, then 74 random bits."""
    global _stamped
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    stamped_ms, stamp = _stamped
    if ms != stamped_ms:
        text = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
        stamp = f"{text[:8]}-{text[8:]}-"
        _stamped = (ms, stamp)
    while True:
        try:
            return stamp + _parts.pop()
        except IndexError:
            _parts.extend(_random_parts())
