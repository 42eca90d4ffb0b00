"""Pushover's emergency priority: a message re-sent every ``retry`` seconds until someone acknowledges it,
it is cancelled, or ``expire`` seconds have passed; a receipt to poll; a callback on acknowledgement.

- The receipt row (``PushoverReceipt``) is written in the transaction that stores the message
  (``Gateway.publish``'s ``extra`` rows), so an accepted emergency is never left without its re-sending.
- A re-send is new outbox rows for the same message (one per broadcast channel and registered device,
  as the publish pipeline makes them), so it is as durable as the first send and carries the same
  message id: a receiver that must not alert twice drops it, one that alerts again keeps it.
- Acknowledging is the message's ``ack`` action (``POST /api/action``, MQTT ``…/act``): the hook
  ``acknowledge`` runs in the action's transaction and adds Pushover's receipt fields to the action event
  under ``"pushover"``. That event reaches the message's ``callback_url`` (Pushover's ``callback``)
  signed, through the outbox, as every action does; ``called_back_at`` is when that POST succeeded.
- Time comes from a ``Clock`` (``now`` and ``sleep``), so a test moves time forward without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.access import Access, Principal, topic_info
from gateway.channels import Job
from gateway.channels.webhook import CALLBACK, WebhookChannel
from gateway.clock import Clock
from gateway.envelope import as_utc, envelope
from gateway.errors import NotFound
from gateway.outbox import Outbox
from gateway.publish import NewMessage
from gateway.pushover import EmergencySpec
from gateway.storage.models import Delivery, Message, PushoverReceipt, Receipt, Topic
from gateway.targets import DeviceTargets

__all__ = ["Emergencies", "new_receipt_id"]

log = logging.getLogger(__name__)

_IDLE = 60.0  # seconds between looks at the table when nothing is due sooner (rows another process wrote)
_BATCH = 100  # re-sends per transaction
_ALPHABET = string.ascii_letters + string.digits


def new_receipt_id() -> str:
    """A receipt as Pushover's look: 30 letters and digits (178 random bits: not guessable)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(30))


def _unix(value: datetime | None) -> int:
    return int(as_utc(value).timestamp()) if value is not None else 0


class Emergencies:
    def __init__(
        self,
        sessions: async_sessionmaker[Any],
        access: Access,
        outbox: Outbox,
        targets: DeviceTargets,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._access = access
        self._outbox = outbox
        self._targets = targets
        self.clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self.resent = 0  # re-sends made, for metrics and tests

    # -- publishing ----------------------------------------------------------------------------------

    def receipt_row(self, receipt_id: str, spec: EmergencySpec, message: NewMessage) -> PushoverReceipt:
        """The row that makes ``message`` an emergency; written with the message (``publish(extra=)``)."""
        now = self.clock.now()
        return PushoverReceipt(
            id=receipt_id,
            message_id=message.id,
            topic_id=message.topic_id,
            retry=spec.retry,
            tags=spec.tags,
            next_send_at=now + timedelta(seconds=spec.retry),
            expires_at=now + timedelta(seconds=spec.expire),
            last_delivered_at=now,
            acknowledged_by="",
            acknowledged_by_device="",
            created_at=now,
        )

    def wake(self) -> None:
        """A new emergency was stored: the scheduler looks again at what is due."""
        self._wake.set()

    def stop(self) -> None:
        """End ``run`` after the pass in progress: cancelling it mid-query would leave a connection for the
        pool to reset during shutdown."""
        self._stopping = True
        self._wake.set()

    # -- re-sending ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Re-send what is due, then sleep until the next is due, a new one arrives, or ``_IDLE``."""
        while not self._stopping:
            self._wake.clear()
            try:
                delay = await self.resend_due()
            except Exception:
                log.exception("emergency re-sending failed; trying again later")
                delay = _IDLE
            if self._stopping:
                return
            sleeper = asyncio.ensure_future(self.clock.sleep(delay))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()

    async def resend_due(self) -> float:
        """Queue a re-send of every emergency that is due; the seconds until the next one is due."""
        now = self.clock.now()
        live = (
            PushoverReceipt.acknowledged_at.is_(None),
            PushoverReceipt.cancelled_at.is_(None),
            PushoverReceipt.expires_at > now,
        )
        jobs: list[Job] = []
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(PushoverReceipt, Message, Receipt.id, Topic)
                    .join(Message, Message.id == PushoverReceipt.message_id)
                    .join(Receipt, Receipt.message_id == Message.id)
                    .join(Topic, Topic.id == Message.topic_id)
                    .where(*live, PushoverReceipt.next_send_at <= now)
                    .order_by(PushoverReceipt.next_send_at)
                    .limit(_BATCH)
                )
            ).all()
            made: list[tuple[Delivery, bytes, str]] = []
            for emergency, message, receipt_id, topic in rows:
                emergency.next_send_at = now + timedelta(seconds=emergency.retry)
                emergency.last_delivered_at = now
                payload = envelope(message, receipt_id, topic.name)
                targets = [(name, "") for name in self._outbox.channels]
                targets += [
                    (t.channel, t.device_id)
                    for t in self._targets.for_topic(topic_info(topic), self._outbox.lanes)
                ]
                for channel, target in targets:
                    row = Delivery(
                        message_id=message.id,
                        channel=channel,
                        target=target,
                        event="",
                        next_attempt_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                    session.add(row)
                    made.append((row, payload, topic.name))
            await session.flush()
            jobs = [
                Job(row.id, row.channel, row.message_id, topic, payload, "", row.target)
                for row, payload, topic in made
            ]
            following = await session.scalar(select(func.min(PushoverReceipt.next_send_at)).where(*live))
            await session.commit()
        if rows:
            self.resent += len(rows)
            log.info("emergency: re-sent %d unacknowledged messages", len(rows))
            self._outbox.submit(jobs)
        if len(rows) == _BATCH:
            return 0.0
        if following is None:
            return _IDLE
        return min(_IDLE, max(0.0, (as_utc(following) - now).total_seconds()))

    # -- acknowledging (the ``Actions`` hook) --------------------------------------------------------

    async def acknowledge(
        self, session: Any, message: Message, principal: Principal, taken: dict[str, Any]
    ) -> dict[str, Any]:
        """An ``ack`` action on an emergency stops its re-sending; the first one says who acknowledged.
        Returns Pushover's receipt fields for the action event (empty for any other action)."""
        if taken.get("action_id") != "ack":
            return {}
        emergency = await session.scalar(
            select(PushoverReceipt).where(PushoverReceipt.message_id == message.id)
        )
        if emergency is None:
            return {}
        if emergency.acknowledged_at is None:
            emergency.acknowledged_at = self.clock.now()
            emergency.acknowledged_by = str(principal)[:100]
            emergency.acknowledged_by_device = (taken.get("device_name") or "")[:100]
            log.info("emergency %s acknowledged by %s", message.id, principal)
        return {
            "pushover": {
                "receipt": emergency.id,
                "acknowledged": 1,
                "acknowledged_at": _unix(emergency.acknowledged_at),
                "acknowledged_by": emergency.acknowledged_by,
                "acknowledged_by_device": emergency.acknowledged_by_device,
            }
        }

    # -- the receipt API -----------------------------------------------------------------------------

    async def status(self, principal: Principal, receipt_id: str) -> dict[str, Any]:
        """Pushover's receipt fields (Unix times, 0 for "not yet")."""
        async with self._sessions() as session:
            emergency = await self._find(session, principal, receipt_id)
            called_back = await session.scalar(
                select(func.min(Delivery.updated_at)).where(
                    Delivery.message_id == emergency.message_id,
                    Delivery.channel == WebhookChannel.name,
                    Delivery.target == CALLBACK,
                    Delivery.event == "action",
                    Delivery.state == "sent",
                )
            )
        acknowledged = emergency.acknowledged_at is not None
        expired = not acknowledged and as_utc(emergency.expires_at) <= self.clock.now()
        return {
            "status": 1,
            "acknowledged": int(acknowledged),
            "acknowledged_at": _unix(emergency.acknowledged_at),
            "acknowledged_by": emergency.acknowledged_by,
            "acknowledged_by_device": emergency.acknowledged_by_device,
            "last_delivered_at": _unix(emergency.last_delivered_at),
            "expired": int(expired),
            "expires_at": _unix(emergency.expires_at),
            "called_back": int(called_back is not None),
            "called_back_at": _unix(called_back),
        }

    async def cancel(self, principal: Principal, receipt_id: str) -> None:
        """Stop re-sending one emergency (cancelling one that already stopped changes nothing)."""
        async with self._sessions() as session:
            emergency = await self._find(session, principal, receipt_id)
            if emergency.cancelled_at is None:
                emergency.cancelled_at = self.clock.now()
            await session.commit()

    async def cancel_by_tag(self, topic_id: str, tag: str) -> int:
        """Stop re-sending every emergency of the topic that carries ``tag``; how many were stopped."""
        now = self.clock.now()
        async with self._sessions() as session:
            rows = await session.scalars(
                select(PushoverReceipt).where(
                    PushoverReceipt.topic_id == topic_id,
                    PushoverReceipt.acknowledged_at.is_(None),
                    PushoverReceipt.cancelled_at.is_(None),
                    PushoverReceipt.expires_at > now,
                )
            )
            ids = [row.id for row in rows if tag in (row.tags or [])]
            if ids:
                await session.execute(
                    update(PushoverReceipt).where(PushoverReceipt.id.in_(ids)).values(cancelled_at=now)
                )
            await session.commit()
        return len(ids)

    async def _find(self, session: Any, principal: Principal, receipt_id: str) -> PushoverReceipt:
        """The receipt if the credential may see its topic; unknown and not permitted answer alike."""
        row = (
            await session.execute(
                select(PushoverReceipt, Topic)
                .join(Topic, Topic.id == PushoverReceipt.topic_id)
                .where(PushoverReceipt.id == receipt_id[:30])
            )
        ).first()
        if row is None or not self._access.may_access(principal, topic_info(row[1])):
            raise NotFound("receipt not found; may be invalid or expired", error="not found")
        return row[0]  # type: ignore[no-any-return]
