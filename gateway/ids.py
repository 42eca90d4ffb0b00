"""Identifiers: UUIDv7 for rows users see (time-sortable, so ids order like the messages they name)."""

from __future__ import annotations

import os
import time

__all__ = ["new_id"]

# The random parts of ids are made a few hundred at a time from one read of the OS's randomness: one
# getrandom() per id was a syscall per id, two per push, and formatting each id's random digits on its
# own took as long again as the rest of ``new_id``. Each id takes a part of its own, never reused; taking
# one (``list.pop``) is atomic, so threads (a CLI, a test's seeding) may make ids too.
_PARTS = 410  # random parts per refill
# A part's first four bytes: the version nibble (7) and 12 random bits, then the variant's two bits (10)
# and 14 random bits. Their bits are set for all parts at once, as one integer.
_HEAD_KEPT = int.from_bytes(bytes([0x0F, 0xFF, 0x3F, 0xFF]) * _PARTS, "big")
_HEAD_SET = int.from_bytes(bytes([0x70, 0x00, 0x80, 0x00]) * _PARTS, "big")
_stamped: tuple[int, str] = (-1, "")  # the last millisecond made an id in, and its text
_parts: list[str] = []


def _random_parts() -> list[str]:
    """The 74 random bits of ids after the timestamp, as text: ``7rrr-Vrrr-rrrrrrrrrrrr`` (12 bits of
    rand_a, then rand_b's 62: the variant digit's two and 15 digits). The digits come from ``bytes.hex``
    with separators, split, so only the joining of each part's three pieces runs per part (half the time
    of formatting each from one string of digits)."""
    heads = int.from_bytes(os.urandom(4 * _PARTS), "big") & _HEAD_KEPT | _HEAD_SET
    halves = iter(heads.to_bytes(4 * _PARTS, "big").hex("-", 2).split("-"))  # "7rrr", "Vrrr", "7rrr", ...
    tails = os.urandom(6 * _PARTS).hex(" ", 6).split()  # 12 random digits each
    return [
        f"{version}-{variant}-{tail}" for version, variant, tail in zip(halves, halves, tails, strict=True)
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
