"""MicroPython's ``utime`` for CPython: millisecond ticks that wrap as on the boards, and sleeps."""

from __future__ import annotations

import time as _time

TICKS_PERIOD = 1 << 30  # the ESP32 and RP2 ports wrap ticks_ms here
_HALF = TICKS_PERIOD // 2


def ticks_ms() -> int:
    return (_time.monotonic_ns() // 1_000_000) % TICKS_PERIOD


def ticks_add(ticks: int, delta: int) -> int:
    return (ticks + delta) % TICKS_PERIOD


def ticks_diff(ticks1: int, ticks2: int) -> int:
    return ((ticks1 - ticks2 + _HALF) % TICKS_PERIOD) - _HALF


def sleep_ms(ms: int) -> None:
    _time.sleep(ms / 1000)


def sleep(seconds: float) -> None:
    _time.sleep(seconds)


def time() -> int:
    return int(_time.time())
