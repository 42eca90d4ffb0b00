"""MicroPython's ``machine`` for CPython: a simulated board whose pin levels the test drives and reads.

A ``Pin`` object is a handle on a physical pin, as on the boards: two ``Pin(2)`` share one level.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_levels: dict[object, int] = {}  # the board: pin id -> level (0 or 1)


def drive(pin_id: object, level: int) -> None:
    """Test helper: what a button or a sensor does to an input pin."""
    with _lock:
        _levels[pin_id] = 1 if level else 0


def level(pin_id: object) -> int:
    """Test helper: the level a pin has (an LED on an output pin is lit at 1)."""
    with _lock:
        return _levels.get(pin_id, 0)


def reset_board() -> None:
    with _lock:
        _levels.clear()


def unique_id() -> bytes:
    return b"\x24\x0a\xc4\x12\x34\x56"


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id: object, mode: int = -1, pull: int = -1, *, value: int | None = None) -> None:
        self._id = id
        self._mode = mode
        with _lock:
            if value is not None:
                _levels[id] = 1 if value else 0
            elif id not in _levels:
                _levels[id] = 1 if pull == Pin.PULL_UP else 0  # an open input floats to its pull

    def value(self, x: int | None = None) -> int | None:
        if x is None:
            return level(self._id)
        drive(self._id, x)
        return None

    def __call__(self, x: int | None = None) -> int | None:
        return self.value(x)

    def on(self) -> None:
        drive(self._id, 1)

    def off(self) -> None:
        drive(self._id, 0)

    def __repr__(self) -> str:
        return f"Pin({self._id!r})"
