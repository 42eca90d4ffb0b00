"""The Expo channel: phones (iOS, Android) through the Expo push service.

The outbox has one row per message and device (``gateway.targets``: platform ios/android -> lane
``expo``) and calls ``deliver`` once per row, many at a time. The channel gathers those concurrent calls
into batches of at most ``[expo] batch_size`` (100, Expo's limit) and sends each batch as one
``push/send`` request: a batch closes when it is full, or once the calls ready in the same event-loop
iteration have joined it, so a fan-out to 250 phones is three requests, and a lone message waits for
nothing. Each caller gets its own device's outcome.

What a send shows (``Outcome``):

- an ``ok`` ticket: the row is ``sent`` but not yet delivered. Expo hands the notification to Apple or
  Google later; the ticket is stored (``ExpoTicket``) and ``gateway.expo_receipts`` reads its receipt
  after ``receipt_delay``, and only an ``ok`` receipt counts the device as delivered;
- ``DeviceNotRegistered``: the app was uninstalled or its token is stale: the device is marked
  ``expired`` at once (``Devices.expire``), the row ``failed``, and nothing more goes to it;
- ``MessageRateExceeded``, ``InvalidCredentials`` (the app's push credentials on Expo, which the operator
  can fix), and a whole request that failed (no answer, timeout, 429, 5xx, 401/403): tried again with
  backoff (``[expo] backoff_base``/``backoff_max``, Expo's ``Retry-After`` honoured) up to
  ``max_attempts``, then ``dead``;
- ``MessageTooBig`` and other ticket errors: ``failed``. A request Expo refuses as a whole (400: one bad
  notification, or tokens of several Expo projects in one request) is split in halves and sent again, so
  only the notifications Expo refuses on their own fail.

The notification: ``title`` and ``body`` from the message, ``priority`` from pushgate's (lowest and low
-> ``normal``, normal -> ``default``, high and urgent -> ``high``), ``sound`` as the message says
(``default`` when it names none; Pushover's ``none`` means silent), ``ttl`` when the message has one,
``categoryId`` the message's notification category (``gateway.categories``: the app registers the
categories to show lock-screen action buttons), and ``data`` the JSON envelope without the title and
message (``id``, ``receipt_id``, ``topic``, ``actions``, ``click_url``, ``tags``, ``priority``,
``category``, ``timestamp``), so the app can report taps to ``POST /api/action``. Expo refuses payloads
over 4096 bytes: a longer body is shortened to fit, ending in "…", and ``data.truncated`` is true (as
ntfy does for Firebase).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from exponent_server_sdk import (
    DeviceNotRegisteredError,
    MessageRateExceededError,
    PushReceipt,
    PushTicket,
    PushTicketError,
)
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.channels import Job, Outcome, State
from gateway.config import ExpoConfig
from gateway.devices import Devices
from gateway.expo_api import ExpoApi, ExpoError, ExpoUnavailable, Notification
from gateway.json_output import compact_json
from gateway.outbox import RetryPolicy
from gateway.storage.models import Device, ExpoTicket, Message

__all__ = ["EXPO", "PRIORITY", "ExpoChannel", "Verdict", "notification", "verdict"]

log = logging.getLogger(__name__)

EXPO = "expo"  # the lane name (``gateway.targets.CHANNEL_OF_PLATFORM``)
# pushgate priority -> Expo's: "default" is each platform's own (normal on Android, high on iOS).
PRIORITY = {"lowest": "normal", "low": "normal", "normal": "default", "high": "high", "urgent": "high"}
MAX_PAYLOAD_BYTES = 4096  # Expo refuses a notification larger than this (MessageTooBig)
_SILENT = "none"  # Pushover's silent sound
_SHOWN = ("title", "message")  # envelope fields the notification shows; the rest goes into ``data``
# Ticket and receipt errors worth sending again: the rate, and credentials the operator can fix.
_RETRIED = frozenset({"MessageRateExceeded", "InvalidCredentials"})

Clock = Callable[[], datetime]


class Verdict(StrEnum):
    """What a ticket or receipt says: ``OK``, ``UNREGISTERED`` (expire the device), ``RETRY`` or
    ``FAILED``."""

    OK = "ok"
    UNREGISTERED = "unregistered"
    RETRY = "retry"
    FAILED = "failed"


def verdict(response: PushTicket | PushReceipt) -> tuple[Verdict, str | None]:
    """Read a ticket or receipt with the SDK's own checks: the verdict and, for an error, its text."""
    try:
        response.validate_response()
    except DeviceNotRegisteredError as exc:
        return Verdict.UNREGISTERED, f"DeviceNotRegistered: {exc.message}"
    except MessageRateExceededError as exc:
        return Verdict.RETRY, f"MessageRateExceeded: {exc.message}"
    except PushTicketError as exc:
        error = str((response.details or {}).get("error") or "error")
        return (Verdict.RETRY if error in _RETRIED else Verdict.FAILED), f"{error}: {exc.message}"
    return Verdict.OK, None


def notification(token: str, envelope: Mapping[str, Any], sound: str | None, ttl: int | None) -> Notification:
    """The Expo notification of one message (its JSON ``envelope``) for one device's token."""
    data = {name: value for name, value in envelope.items() if name not in _SHOWN}
    body = str(envelope.get("message") or "")
    made = Notification(
        to=token,
        data=data,
        title=envelope.get("title") or None,
        body=body,
        sound=None if sound == _SILENT else (sound or "default"),
        ttl=ttl,
        priority=PRIORITY.get(str(envelope.get("priority")), "default"),
        category=envelope.get("category"),
    )
    excess = _size(made) - MAX_PAYLOAD_BYTES
    while excess > 0 and body:
        body = body.encode()[: max(0, len(body.encode()) - excess - 3)].decode(errors="ignore")
        made = made._replace(body=body + "…", data={**data, "truncated": True})
        excess = _size(made) - MAX_PAYLOAD_BYTES
    return made


def _size(made: Notification) -> int:
    return len(compact_json(made.get_payload()))


class ExpoChannel:
    name = EXPO

    def __init__(
        self,
        sessions: async_sessionmaker[Any],
        api: ExpoApi,
        devices: Devices,
        config: ExpoConfig,
        clock: Clock,
        on_tickets: Callable[[], None],
    ) -> None:
        self._sessions = sessions
        self._api = api
        self._devices = devices
        self._config = config
        self._clock = clock
        self._on_tickets = on_tickets
        self._requests = asyncio.Semaphore(config.concurrency)
        self._batch: list[tuple[Job, asyncio.Future[Outcome]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.retry = RetryPolicy(config.backoff_base, config.backoff_max, config.max_attempts)
        # Outbox workers for this lane: enough to fill every request that may be in flight.
        self.workers = config.concurrency * config.batch_size

    async def subscribers(self, topic: str) -> int:
        return 0  # devices are counted by ``gateway.targets``

    async def deliver(self, job: Job) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        batch = self._batch
        batch.append((job, future))
        if len(batch) >= self._config.batch_size:
            self._close(batch)
        elif len(batch) == 1:
            # Runs after the calls already ready in this loop iteration have joined the batch.
            asyncio.get_running_loop().call_soon(self._close, batch)
        return await future

    def _close(self, batch: list[tuple[Job, asyncio.Future[Outcome]]]) -> None:
        if batch is not self._batch:
            return  # already closed (it filled up)
        self._batch = []
        task = asyncio.create_task(self._send_batch(batch), name="expo-send")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the batches in flight (their rows stay pending and are sent after the restart)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _send_batch(self, batch: list[tuple[Job, asyncio.Future[Outcome]]]) -> None:
        try:
            async with self._requests:
                try:
                    outcomes = await self._send([job for job, _ in batch])
                except Exception as exc:  # the database, most likely: the outbox tries again
                    log.exception("expo: a batch of %d could not be sent", len(batch))
                    outcomes = [Outcome(State.PENDING, error=f"{type(exc).__name__}: {exc}")] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
        finally:
            for _, future in batch:
                future.cancel()  # only those still open: the batch was cancelled

    async def _send(self, jobs: Sequence[Job]) -> list[Outcome]:
        devices, messages = await self._lookup(jobs)
        outcomes: list[Outcome | None] = [None] * len(jobs)
        ready: list[tuple[int, Notification]] = []
        for i, job in enumerate(jobs):
            device = devices.get(job.target)
            message = messages.get(job.message_id)
            if device is None or message is None:
                outcomes[i] = Outcome(State.FAILED, error="the device or the message was deleted")
            elif device.status != "active" or not device.push_token:
                outcomes[i] = Outcome(State.FAILED, error=f"the device is {device.status}")
            else:
                envelope = json.loads(job.payload)
                ready.append((i, notification(device.push_token, envelope, message.sound, message.ttl)))
        tickets: list[tuple[int, ExpoTicket]] = []
        unregistered: dict[str, str] = {}
        for i, answer in await self._publish(ready):
            job = jobs[i]
            if isinstance(answer, ExpoError):
                state = State.PENDING if isinstance(answer, ExpoUnavailable) else State.FAILED
                outcomes[i] = Outcome(state, error=answer.message, retry_after=answer.retry_after)
                continue
            kind, error = verdict(answer)
            if kind == Verdict.OK:
                outcomes[i] = Outcome(State.SENT)  # delivered only when the receipt says so
                if answer.id:
                    tickets.append((i, self._ticket(job, answer.id)))
                else:
                    log.warning(
                        "expo: an ok ticket without an id; delivery %s stays unconfirmed", job.delivery_id
                    )
            elif kind == Verdict.UNREGISTERED:
                unregistered[job.target] = error or ""
                outcomes[i] = Outcome(State.FAILED, error=error)
            else:
                outcomes[i] = Outcome(State.PENDING if kind == Verdict.RETRY else State.FAILED, error=error)
        await self._store(jobs, [ticket for _, ticket in tickets])
        for device_id, reason in unregistered.items():
            await self._devices.expire(device_id, reason)
        if tickets:
            self._on_tickets()
        return [outcome or Outcome(State.PENDING, error="no answer") for outcome in outcomes]

    def _ticket(self, job: Job, ticket_id: str) -> ExpoTicket:
        return ExpoTicket(
            delivery_id=job.delivery_id, ticket_id=ticket_id, device_id=job.target, sent_at=self._clock()
        )

    async def _lookup(self, jobs: Sequence[Job]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The devices' tokens and the messages' sound and ttl (not in the envelope), in two queries."""
        device_ids = list({job.target for job in jobs})
        message_ids = list({job.message_id for job in jobs})
        async with self._sessions() as session:
            devices = await session.execute(
                select(Device.id, Device.push_token, Device.status).where(Device.id.in_(device_ids))
            )
            messages = await session.execute(
                select(Message.id, Message.sound, Message.ttl).where(Message.id.in_(message_ids))
            )
            return {row.id: row for row in devices}, {row.id: row for row in messages}

    async def _publish(
        self, ready: Sequence[tuple[int, Notification]]
    ) -> list[tuple[int, PushTicket | ExpoError]]:
        """Send in one request; a batch Expo refuses as a whole is split in halves until the notifications
        it refuses are alone."""
        if not ready:
            return []
        try:
            tickets = await self._api.send([made for _, made in ready])
        except ExpoUnavailable as exc:
            log.warning("expo: %d notifications to retry: %s", len(ready), exc.message)
            return [(i, exc) for i, _ in ready]
        except ExpoError as exc:
            if len(ready) == 1:
                log.warning("expo: a notification was refused: %s", exc.message)
                return [(ready[0][0], exc)]
            half = len(ready) // 2
            return await self._publish(ready[:half]) + await self._publish(ready[half:])
        return [(i, ticket) for (i, _), ticket in zip(ready, tickets, strict=True)]

    async def _store(self, jobs: Sequence[Job], tickets: list[ExpoTicket]) -> None:
        """Replace the batch's tickets: a delivery sent again keeps only its newest."""
        async with self._sessions() as session:
            await session.execute(
                delete(ExpoTicket).where(ExpoTicket.delivery_id.in_([job.delivery_id for job in jobs]))
            )
            if tickets:
                await session.execute(
                    insert(ExpoTicket),
                    [
                        {
                            "delivery_id": t.delivery_id,
                            "ticket_id": t.ticket_id,
                            "device_id": t.device_id,
                            "sent_at": t.sent_at,
                        }
                        for t in tickets
                    ],
                )
            await session.commit()
