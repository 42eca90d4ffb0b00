"""Expo push receipts: whether Apple or Google took each notification Expo accepted.

An ``ok`` ticket only says Expo queued the notification; its receipt, ready some minutes later, says
what happened next. ``receipt_delay`` (15 minutes) after a send, the tickets due are read from the
``expo_tickets`` table and their receipts fetched with ``check_receipts_multiple``, at most
``receipt_batch_size`` (1000) ids per request. Each receipt settles its delivery through
``Outbox.confirm``, which moves the message's receipt:

- ``ok``: the device is counted in ``delivered_count`` and the receipt becomes ``delivered``;
- ``DeviceNotRegistered``: the device is marked ``expired`` and the delivery ``failed``;
- ``MessageRateExceeded``, ``InvalidCredentials``: the delivery is sent again after the channel's backoff;
- any other error: ``failed``;
- no receipt yet: checked again ``receipt_delay`` later (at least a minute), until ``receipt_expiry``
  after the send; then the check is dropped and the delivery stays ``sent``, unconfirmed.

The pending checks are the table's rows, so they survive a restart; a check is due at ``sent_at +
receipt_delay`` with the delay configured now. Time comes from the ``clock`` the gateway was given, so a
test need not wait 15 minutes. A failed request to Expo is retried with the channel's backoff. A ticket's
row is deleted before its outcome is recorded: a crash between the two loses one confirmation rather than
counting a device twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.channels import Job, Outcome, State
from gateway.channels.expo import EXPO, Verdict, verdict
from gateway.config import ExpoConfig
from gateway.devices import Devices
from gateway.envelope import as_utc
from gateway.expo_api import ExpoApi, ExpoError
from gateway.outbox import Outbox, RetryPolicy
from gateway.storage.models import Delivery, ExpoTicket

__all__ = ["ExpoReceipts"]

log = logging.getLogger(__name__)

_RECHECK_MIN = 60.0  # seconds: a receipt Expo does not have yet is not asked for again sooner


class ExpoReceipts:
    def __init__(
        self,
        sessions: async_sessionmaker[Any],
        api: ExpoApi,
        outbox: Outbox,
        devices: Devices,
        config: ExpoConfig,
        clock: Callable[[], datetime],
        poll_interval: float,
    ) -> None:
        self._sessions = sessions
        self._api = api
        self._outbox = outbox
        self._devices = devices
        self._config = config
        self._clock = clock
        self._poll = poll_interval
        self._retry = RetryPolicy(config.backoff_base, config.backoff_max)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._settling = False
        self._stopping = False

    def wake(self) -> None:
        """New tickets were stored (with a short ``receipt_delay``, they may be due soon)."""
        self._wake.set()

    def stop(self) -> None:
        """End ``run``: at once while it waits or asks Expo, after recording what it has already read."""
        self._stopping = True
        self._wake.set()
        if self._task is not None and not self._settling:
            self._task.cancel()

    async def run(self) -> None:
        self._task = asyncio.current_task()
        failures = 0
        while not self._stopping:
            wait = self._poll
            try:
                if await self.check_due() >= self._config.receipt_batch_size:
                    wait = 0.0  # more are due
                failures = 0
            except ExpoError as exc:
                failures += 1
                wait = self._retry.delay(failures, random.random(), exc.retry_after)
                log.warning("expo receipts: %s; asking again in %.0fs", exc.message, wait)
            except Exception:
                log.exception("expo receipts: the check failed; trying again in %.1fs", self._poll)
            if self._stopping:
                break
            if failures:
                await asyncio.sleep(wait)  # backing off: new tickets do not hurry it
            elif wait:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except TimeoutError:
                    pass

    async def check_due(self) -> int:
        """Fetch and record the receipts due now (at most one request's worth); returns how many."""
        async with self._lock:
            now = self._clock()
            due = ExpoTicket.sent_at <= now - timedelta(seconds=self._config.receipt_delay)
            not_deferred = or_(ExpoTicket.check_after.is_(None), ExpoTicket.check_after <= now)
            async with self._sessions() as session:
                rows = (
                    await session.execute(
                        select(ExpoTicket, Delivery.message_id, Delivery.attempts)
                        .join(Delivery, Delivery.id == ExpoTicket.delivery_id)
                        # a row not yet recorded as sent is the outbox's until it is
                        .where(Delivery.state == State.SENT.value, due, not_deferred)
                        .order_by(ExpoTicket.sent_at)
                        .limit(self._config.receipt_batch_size)
                    )
                ).all()
            if not rows:
                return 0
            receipts = await self._api.receipts([ticket.ticket_id for ticket, _, _ in rows])
            self._settling = True  # what was read is recorded even if shutdown comes now
            try:
                await self._settle(rows, receipts, now)
            finally:
                self._settling = False
            return len(rows)

    async def _settle(self, rows: list[Any], receipts: dict[str, Any], now: datetime) -> None:
        results: list[tuple[Job, Outcome]] = []
        settled: list[int] = []
        deferred: list[int] = []
        unregistered: dict[str, str] = {}
        expiry = timedelta(seconds=self._config.receipt_expiry)
        for ticket, message_id, attempts in rows:
            receipt = receipts.get(ticket.ticket_id)
            if receipt is None:
                if as_utc(ticket.sent_at) + expiry <= as_utc(now):
                    log.warning("expo: no receipt for ticket %s in time; left unconfirmed", ticket.ticket_id)
                    settled.append(ticket.delivery_id)
                else:
                    deferred.append(ticket.delivery_id)
                continue
            settled.append(ticket.delivery_id)
            job = Job(ticket.delivery_id, EXPO, message_id, "", b"", "", ticket.device_id, attempts)
            kind, error = verdict(receipt)
            if kind == Verdict.OK:
                results.append((job, Outcome(State.SENT, delivered=1)))
            elif kind == Verdict.UNREGISTERED:
                unregistered[ticket.device_id] = error or ""
                results.append((job, Outcome(State.FAILED, error=error)))
            else:
                state = State.PENDING if kind == Verdict.RETRY else State.FAILED
                results.append((job, Outcome(state, error=error)))
        recheck = now + timedelta(seconds=max(self._config.receipt_delay, _RECHECK_MIN))
        async with self._sessions() as session:
            if settled:
                await session.execute(delete(ExpoTicket).where(ExpoTicket.delivery_id.in_(settled)))
            if deferred:
                await session.execute(
                    update(ExpoTicket).where(ExpoTicket.delivery_id.in_(deferred)).values(check_after=recheck)
                )
            await session.commit()
        for device_id, reason in unregistered.items():
            await self._devices.expire(device_id, reason)
        if results:
            await self._outbox.confirm(results)
