"""The publish pipeline every edge calls: look up, authorise, rate-limit, validate, store durably, hand to
the outbox.

``publish`` returns only after the message, its receipt and what its delivery needs are committed
(``GroupCommitWriter``), so an edge's success answer always means "on disk": its receipt flagged while its
broadcast (MQTT) is not settled (``Receipt.broadcast_pending``), and a delivery row per registered device
the message goes to (``gateway.targets``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.access import Access, Principal, TopicInfo
from gateway.channels import Job
from gateway.config import LimitsConfig
from gateway.envelope import envelope
from gateway.errors import PushgateError
from gateway.ids import new_id
from gateway.outbox import Outbox
from gateway.ratelimit import RateLimiter, RateState
from gateway.request import PushRequest, PushResult
from gateway.storage.bulk import columns
from gateway.storage.models import Base, Delivery, Message, Receipt, utcnow
from gateway.targets import DeviceTargets, Target
from gateway.topics import TopicDirectory
from gateway.validation import validate
from gateway.writer import GroupCommitWriter, Row, orm_row

__all__ = ["Publisher", "Submitted"]

log = logging.getLogger(__name__)

# Told once what became of a push handed to ``Publisher.submit``: ``None`` once stored, or the error.
Submitted = Callable[[BaseException | None], None]


class Publisher:
    def __init__(
        self,
        *,
        topics: TopicDirectory,
        access: Access,
        limits: LimitsConfig,
        writer: GroupCommitWriter,
        outbox: Outbox,
        limiter: RateLimiter,
        targets: DeviceTargets,
        on_accepted: Callable[[TopicInfo, Iterable[str]], None] | None = None,
    ) -> None:
        self._topics = topics
        self._access = access
        self._limits = limits
        self._writer = writer
        self._outbox = outbox
        self._limiter = limiter
        self._targets = targets
        # Told the action ids of each committed message that offers actions (Home Assistant discovery).
        self._on_accepted = on_accepted

    async def publish(
        self,
        req: PushRequest,
        principal: Principal | None = None,
        *,
        extra: Callable[[NewMessage], Sequence[Base]] | None = None,
    ) -> PushResult:
        """Store and route one notification; ``principal`` is given when the edge authenticated already.
        ``extra`` makes rows that belong to the message (a Pushover emergency's receipt), written in its
        transaction so neither exists without the other."""
        topic = await self._topics.get(req.topic)
        if principal is None:
            principal = await self._access.authenticate(req.credential)
        accepted = self._accept(req, topic, principal)
        if extra is not None:
            accepted.extra = [orm_row(row) for row in extra(accepted.message)]
        self._route(accepted, await self._writer.write(accepted.rows))
        listening = 0
        for channel in self._outbox.channels.values():
            listening += await channel.subscribers(topic.name)
        message = accepted.message
        return PushResult(
            message.id,
            accepted.receipt_id,
            topic.name,
            message.created_at,
            len(accepted.devices) + listening,
            accepted.rate,
        )

    def submit(self, req: PushRequest, principal: Principal, done: Submitted) -> None:
        """``publish`` for an edge that must not wait per message (the broker's reader handles the next
        packet while this one is committed): ``done`` is called with ``None`` once stored, or with the
        error (a ``PushgateError`` at once when the push is refused). With the topic cached and room in
        the writer's queue, no Task and no future is made. No ``PushResult`` is made: MQTT answers with a
        PUBACK, which carries none."""
        topic = self._topics.cached(req.topic)
        if topic is None:
            self._in_task(self.publish(req, principal), done)
            return
        try:
            accepted = self._accept(req, topic, principal)
        except PushgateError as exc:
            done(exc)
            return

        def written(ids: list[int] | None, error: BaseException | None) -> None:
            if ids is not None:
                self._route(accepted, ids)
            done(error)

        if not self._writer.submit(accepted.rows, written):  # backed up: wait for room like everyone
            self._in_task(self._write_and_route(accepted), done)

    @staticmethod
    def _in_task(work: Coroutine[Any, Any, Any], done: Submitted) -> None:
        def finished(task: asyncio.Task[Any]) -> None:
            done(asyncio.CancelledError() if task.cancelled() else task.exception())

        asyncio.ensure_future(work).add_done_callback(finished)

    async def _write_and_route(self, accepted: _Accepted) -> None:
        self._route(accepted, await self._writer.write(accepted.rows))

    def _accept(self, req: PushRequest, topic: TopicInfo, principal: Principal) -> _Accepted:
        """Authorise, rate-limit and validate, and build the rows to store; raises a ``PushgateError``."""
        self._access.check(principal, topic)
        rate = self._limiter.acquire(principal, req.client_addr)  # a refused push stores nothing
        valid = validate(req, self._limits)

        # positional, in the fields' order: 15 keyword arguments took 0.7 µs a push, positional ones 0.2
        message = NewMessage(
            new_id(),  # id
            topic.id,  # topic_id
            valid.title,
            valid.message,
            valid.priority,
            valid.tags,
            valid.click_url,
            valid.icon_url,
            valid.image_url,
            valid.actions,
            valid.callback_url,
            valid.sound,
            valid.ttl,
            req.source,
            utcnow(),  # created_at
        )
        devices = self._targets.for_topic(topic, self._outbox.lanes)
        return _Accepted(req, principal, topic, message, new_id(), list(self._outbox.channels), devices, rate)

    def _route(self, accepted: _Accepted, delivery_ids: list[int]) -> None:
        """Hand the committed deliveries (their rows numbered ``delivery_ids``) to the outbox."""
        message, topic = accepted.message, accepted.topic
        if message.actions and self._on_accepted is not None:
            self._on_accepted(topic, [str(action["id"]) for action in message.actions])
        receipt_id = accepted.receipt_id
        payload = envelope(message, receipt_id, topic.name)
        jobs = [Job(None, channel, message.id, topic.name, payload) for channel in accepted.broadcasts]
        jobs += [
            Job(number, target.channel, message.id, topic.name, payload, "", target.device_id)
            for number, target in zip(delivery_ids, accepted.devices, strict=True)
        ]
        self._outbox.submit(jobs)
        # DEBUG, not INFO: a line per push costs a sixth of the push path's CPU and floods the log of a
        # busy gateway; refusals, deliveries given up and every state change of the process stay at INFO.
        log.debug(
            "accepted %s on %s from %s (%s)", message.id, topic.name, accepted.req.source, accepted.principal
        )


@dataclass(slots=True)
class NewMessage:
    """The values of a ``messages`` row about to be stored: what ``envelope`` and an ``extra`` row maker
    read, without the cost of an ORM object (``gateway.writer``)."""

    id: str
    topic_id: str
    title: str
    message: str
    priority: str
    tags: list[str]
    click_url: str | None
    icon_url: str | None
    image_url: str | None
    actions: list[dict[str, Any]]
    callback_url: str | None
    sound: str | None
    ttl: int | None
    source: str
    created_at: datetime

    def row(self) -> Row:
        # spelled out, in ``_MESSAGE`` order: a comprehension over ``__slots__`` with ``getattr`` took twice
        # as long, per push
        return _MESSAGE, (
            self.id,
            self.topic_id,
            self.title,
            self.message,
            self.priority,
            self.tags,
            self.click_url,
            self.icon_url,
            self.image_url,
            self.actions,
            self.callback_url,
            self.sound,
            self.ttl,
            self.source,
            self.created_at,
        )


# The columns each row of a push gives, in the order its values come (``gateway.storage.bulk.Columns``).
_MESSAGE = columns(
    Message.__tablename__,
    (
        "id",
        "topic_id",
        "title",
        "message",
        "priority",
        "tags",
        "click_url",
        "icon_url",
        "image_url",
        "actions",
        "callback_url",
        "sound",
        "ttl",
        "source",
        "created_at",
    ),
)
_RECEIPT = columns(
    Receipt.__tablename__,
    ("id", "message_id", "topic_id", "created_at", "updated_at", "broadcast_pending"),
)
_DELIVERY = columns(
    Delivery.__tablename__,
    ("message_id", "channel", "target", "event", "next_attempt_at", "created_at", "updated_at"),
)


@dataclass(slots=True)
class _Accepted:
    """A push that passed every check, with what its rows are made of."""

    req: PushRequest
    principal: Principal
    topic: TopicInfo
    message: NewMessage
    receipt_id: str
    broadcasts: list[str]  # the broadcast channel (at most one), its pending broadcast flagged on the receipt
    devices: list[Target]  # the device targets, each with a delivery row
    rate: RateState | None
    extra: list[Row] = field(default_factory=list)

    @property
    def rows(self) -> list[Row]:
        message = self.message
        message_id, now = message.id, message.created_at
        pending = bool(self.broadcasts)
        rows = [message.row(), (_RECEIPT, (self.receipt_id, message_id, message.topic_id, now, now, pending))]
        rows += [
            (_DELIVERY, (message_id, target.channel, target.device_id, "", now, now, now))
            for target in self.devices
        ]
        return rows + self.extra if self.extra else rows
