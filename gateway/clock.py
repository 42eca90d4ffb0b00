"""The gateway's clock: what time it is and how to wait, passed in so tests move time instead of sleeping.

Expo's receipt checks and Pushover's emergency re-sending both take it from ``Gateway(config, clock=...)``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Protocol

from gateway.storage.models import utcnow

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return utcnow()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
