"""Reporting an action: a tapped button or a typed reply comes back, the receipt records it, and the news
goes out through the outbox to whoever waits for it: MQTT ``…/action`` and ``…/receipt``, the message's
``callback_url``, and the topic owner's webhooks (``gateway.webhooks``: ``action``, ``read``, ``expired``).

Every edge reports through ``Actions.report``: ``POST /api/action`` and MQTT ``<prefix>/<topic>/act``.
A credential is required even on a public topic: an "Approve" must come from someone who holds the topic's
key or a user token that grants the topic. An unknown message and one the caller may not see get the same
404. Receipt status only moves forward (``advance``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from gateway.access import Access, Principal, topic_info
from gateway.channels import Job
from gateway.envelope import as_utc, iso
from gateway.errors import NotFound, Unauthorized, ValidationError
from gateway.homeassistant import HomeAssistant
from gateway.outbox import Outbox, event_job, event_row
from gateway.receipts import receipt_dict
from gateway.storage.models import Device, Message, Receipt, Topic, utcnow
from gateway.webhooks import Webhooks, receipt_event

__all__ = ["REPLY_MAX_CHARS", "STATUS_ORDER", "ActionHook", "ActionReport", "Actions", "advance"]

REPLY_MAX_CHARS = 1000  # a typed reply is a sentence or two, not a document
# Receipt statuses in the order they may follow each other; a report never moves a receipt backwards.
STATUS_ORDER = ("queued", "failed", "delivered", "expired", "read", "acted")


# Runs in the action's transaction (session, message, who, the action as recorded) and returns fields to
# add to the action event, e.g. Pushover's receipt fields for an acknowledged emergency.
ActionHook = Callable[[Any, Message, Principal, dict[str, Any]], Awaitable[dict[str, Any]]]


def advance(current: str, new: str) -> str:
    return new if STATUS_ORDER.index(new) > STATUS_ORDER.index(current) else current


@dataclass(frozen=True, slots=True)
class ActionReport:
    """What a client reports, untyped as received so validation can name the field."""

    message_id: Any
    action_id: Any
    reply_text: Any = None
    device_id: Any = None

    @classmethod
    def from_fields(cls, body: dict[str, Any]) -> ActionReport:
        return cls(
            body.get("message_id"), body.get("action_id"), body.get("reply_text"), body.get("device_id")
        )


def _text(value: Any, field: str, *, required: bool, max_chars: int = 255) -> str | None:
    if value is None or value == "":
        if required:
            raise ValidationError(field, f"{field} is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"{field} must be a string")
    if len(value) > max_chars:
        raise ValidationError(field, f"{field} is {len(value)} characters; the limit is {max_chars}")
    return value


class Actions:
    def __init__(
        self,
        sessions: Any,
        access: Access,
        outbox: Outbox,
        webhooks: Webhooks,
        *,
        homeassistant: HomeAssistant | None = None,
    ) -> None:
        self._sessions = sessions
        self._homeassistant = homeassistant
        self._access = access
        self._outbox = outbox
        self._webhooks = webhooks
        # SQLite has no row locks: reports are serialised here so two taps cannot both append to the same
        # stale actions_taken list. PostgreSQL also gets SELECT … FOR UPDATE below.
        self._lock = asyncio.Lock()
        self._hooks: list[ActionHook] = []

    def on_action(self, hook: ActionHook) -> None:
        """Register a hook that runs with every recorded action (``gateway.emergency``'s ``ack``)."""
        self._hooks.append(hook)

    async def report(
        self, principal: Principal, report: ActionReport, *, topic_name: str | None = None
    ) -> dict[str, Any]:
        """Record the action on the receipt and queue its events; ``topic_name`` is set by an edge that
        received the report on a topic (MQTT), which must then be the message's topic."""
        if principal.kind == "anonymous":
            raise Unauthorized(
                "reporting an action needs the topic's API key or a user token that grants the topic"
            )
        message_id = _text(report.message_id, "message_id", required=True, max_chars=36)
        action_id = _text(report.action_id, "action_id", required=True, max_chars=64)
        reply_text = _text(report.reply_text, "reply_text", required=False, max_chars=REPLY_MAX_CHARS)
        device_id = _text(report.device_id, "device_id", required=False, max_chars=36)

        async with self._lock, self._sessions() as session:
            message, receipt, topic = await self._locate(session, principal, message_id, topic_name)
            action = next((a for a in message.actions or [] if a.get("id") == action_id), None)
            if action is None:
                offered = ", ".join(a["id"] for a in message.actions or []) or "none"
                raise ValidationError(
                    "action_id", f"message {message_id} has no action {action_id!r}; it offers: {offered}"
                )
            device_name = await self._device_name(session, principal, topic, device_id)

            now = utcnow()
            taken = {
                "action_id": action_id,
                "action_label": action["label"],
                "reply_text": reply_text,
                "device_name": device_name,
                "acted_at": iso(now),
            }
            receipt.actions_taken = [*(receipt.actions_taken or []), taken]
            receipt.acted_count += 1
            receipt.status = advance(receipt.status, "acted")
            receipt.updated_at = now
            event = {"event": "action", "message_id": message.id, "topic": topic.name, **taken}
            for hook in self._hooks:
                event.update(await hook(session, message, principal, taken))
            payloads = {"action": event, "receipt": receipt_dict(receipt)}
            if self._homeassistant is not None:  # <prefix>/<topic>/event: Home Assistant's state topic
                payloads |= self._homeassistant.state_events(action_id, message.id, reply_text)
            jobs = await self._queue(session, message, topic, now, payloads, event)
            await session.commit()
            answer = {"success": True, "action": event, "receipt": receipt_dict(receipt)}
        if self._homeassistant is not None:
            self._homeassistant.actions_used(topic_info(topic), [action_id])
        self._outbox.submit([job() for job in jobs])
        return answer

    async def read(
        self, principal: Principal, message_id: Any, device_id: Any = None, *, topic_name: str | None = None
    ) -> dict[str, Any]:
        """A client showed the message to its user: ``read_count`` grows, the status moves to ``read``."""
        if principal.kind == "anonymous":
            raise Unauthorized("marking a message read needs the topic's API key or a user token")
        checked_id = _text(message_id, "message_id", required=True, max_chars=36)
        checked_device = _text(device_id, "device_id", required=False, max_chars=36)
        async with self._lock, self._sessions() as session:
            message, receipt, topic = await self._locate(session, principal, checked_id, topic_name)
            await self._device_name(session, principal, topic, checked_device)
            now = utcnow()
            receipt.read_count += 1
            receipt.status = advance(receipt.status, "read")
            receipt.updated_at = now
            jobs = await self._queue(
                session,
                message,
                topic,
                now,
                {"receipt": receipt_dict(receipt)},
                receipt_event("read", message, topic, receipt),
            )
            await session.commit()
            answer = {"success": True, "receipt": receipt_dict(receipt)}
        self._outbox.submit([job() for job in jobs])
        return answer

    async def expire_due(self, now: datetime | None = None, batch: int = 500) -> int:
        """Mark ``expired`` the receipts of messages whose ``ttl`` ran out before anyone read them.

        Run by the core's maintenance loop; ``now`` is a parameter so tests pass time in.
        """
        now = now or utcnow()
        async with self._lock, self._sessions() as session:
            rows = (
                await session.execute(
                    select(Message, Receipt, Topic)
                    .join(Receipt, Receipt.message_id == Message.id)
                    .join(Topic, Topic.id == Message.topic_id)
                    .where(Message.ttl.is_not(None), Receipt.status.in_(("queued", "delivered")))
                    .order_by(Message.created_at)
                    .limit(batch)
                )
            ).all()
            jobs: list[Callable[[], Job]] = []
            expired = 0
            for message, receipt, topic in rows:
                if as_utc(message.created_at) + timedelta(seconds=message.ttl or 0) > now:
                    continue
                expired += 1
                receipt.status = advance(receipt.status, "expired")
                receipt.updated_at = now
                jobs += await self._queue(
                    session,
                    message,
                    topic,
                    now,
                    {"receipt": receipt_dict(receipt)},
                    receipt_event("expired", message, topic, receipt),
                )
            await session.commit()
        self._outbox.submit([job() for job in jobs])
        return expired

    async def listened(self, topics: set[str]) -> set[str]:
        """The outbox's ``DeliveredHook``: the topics whose delivered receipts someone would be told about.
        All, when any webhook exists (which ones want which topic is read with the rows); otherwise those
        an MQTT client listens on for receipt updates. Usually none, which saves reading three rows per
        message."""
        if self._webhooks.exist:
            return topics
        channels = self._outbox.channels.values()
        return {topic for topic in topics if any([await c.wants(topic, "receipt") for c in channels])}

    async def delivered(
        self, session: Any, reached: Mapping[str, str], now: datetime
    ) -> list[Callable[[], Job]]:
        """The outbox's ``DeliveredHook``: receipts that just moved from ``queued`` to ``delivered`` (in
        ``session``, not yet committed; message id -> topic name) are announced like every other receipt
        change."""
        rows = await session.execute(
            select(Message, Receipt, Topic)
            .join(Receipt, Receipt.message_id == Message.id)
            .join(Topic, Topic.id == Message.topic_id)
            .where(Message.id.in_(list(reached)))
        )
        makers: list[Callable[[], Job]] = []
        for message, receipt, topic in rows.all():
            makers += await self._queue(
                session,
                message,
                topic,
                now,
                {"receipt": receipt_dict(receipt)},
                receipt_event("delivered", message, topic, receipt),
            )
        return makers

    async def _locate(
        self, session: Any, principal: Principal, message_id: str, topic_name: str | None
    ) -> tuple[Message, Receipt, Topic]:
        """The message, its receipt (locked for update) and topic; one 404 for unknown and not permitted."""
        row = (
            await session.execute(
                select(Message, Receipt, Topic)
                .join(Receipt, Receipt.message_id == Message.id)
                .join(Topic, Topic.id == Message.topic_id)
                .where(Message.id == message_id)
                .with_for_update(of=Receipt)
            )
        ).first()
        if (
            row is None
            or not self._access.may_access(principal, topic_info(row[2]))
            or (topic_name is not None and row[2].name != topic_name)
        ):
            raise NotFound(f"no message {message_id} that this credential may see", error="Message not found")
        return row[0], row[1], row[2]

    async def _queue(
        self,
        session: Any,
        message: Message,
        topic: Topic,
        now: datetime,
        payloads: dict[str, dict[str, Any]],
        webhook_event: dict[str, Any],
    ) -> list[Callable[[], Job]]:
        """Add one outbox row per broadcast channel and event in ``payloads`` (by MQTT event name), and the
        webhooks' rows for ``webhook_event`` (named by its ``event``), to ``session``; the returned makers
        build the jobs once the commit has given the rows their ids."""
        deliveries = [
            event_row(message.id, name, event, payload, now)
            for name, channel in self._outbox.channels.items()
            for event, payload in payloads.items()
            if await channel.wants(topic.name, event)
        ]
        session.add_all(deliveries)
        deliveries += await self._webhooks.queue(
            session, message, topic, now, webhook_event["event"], webhook_event
        )
        topic_name = topic.name
        return [(lambda d=d: event_job(d, topic_name)) for d in deliveries]

    @staticmethod
    async def _device_name(
        session: Any, principal: Principal, topic: Topic, device_id: str | None
    ) -> str | None:
        """The name of the reporting device: one of the user's devices, or of the topic owner's for a key."""
        if device_id is None:
            return None
        owner = principal.user_id if principal.kind == "user" else topic.owner_id
        device = await session.scalar(select(Device).where(Device.id == device_id, Device.user_id == owner))
        if device is None:
            raise ValidationError("device_id", f"no device {device_id} registered to this account")
        return device.device_name or None
