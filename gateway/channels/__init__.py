"""Delivery channels: each turns an outbox job into a send and says how it went (``Outcome``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = ["Channel", "Job", "Outcome", "State"]


class State(StrEnum):
    PENDING = "pending"
    WAITING = "waiting"  # nobody to deliver to yet (no MQTT subscriber); woken when one appears
    SENT = "sent"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Job:
    delivery_id: int
    channel: str
    message_id: str
    topic: str
    payload: bytes
    event: str = ""  # "" for the message envelope, else the event's name ("action", "receipt")


@dataclass(frozen=True, slots=True)
class Outcome:
    state: State
    delivered: int = 0  # targets reached, for the receipt's delivered_count
    error: str | None = None


class Channel(Protocol):
    name: str

    async def subscribers(self, topic: str) -> int:
        """Targets a message on ``topic`` would reach now, for the push answer."""
        ...

    async def deliver(self, job: Job) -> Outcome: ...
