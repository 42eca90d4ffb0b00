"""The outbox worker: works the ``deliveries`` table so nothing accepted is lost.

Freshly committed jobs arrive in memory (``submit``) and go out at once; the table is the truth, read at
start (crash recovery), whenever the in-memory queue overflowed, and when an MQTT subscriber appears for
messages that were waiting for one. State changes are written in one transaction per batch, together
with the receipts they move. Delivery is at least once: a crash between a send and its state write sends
again after the restart, and every payload carries the message id so receivers can drop the duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.channels import Channel, Job, Outcome, State
from gateway.config import OutboxConfig
from gateway.envelope import envelope
from gateway.storage.models import Delivery, Message, Receipt, Topic, utcnow

__all__ = ["Outbox"]

log = logging.getLogger(__name__)

_QUEUE_SIZE = 10_000  # jobs held in memory; beyond that they wait in the table (counted as overflow)
_HOUSEKEEPING_EVERY = 30.0  # seconds between expiry sweeps of waiting deliveries


class Outbox:
    def __init__(self, sessions: async_sessionmaker[Any], config: OutboxConfig) -> None:
        self._sessions = sessions
        self._config = config
        self._channels: dict[str, Channel] = {}
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        self._queued: set[int] = set()
        self._rescan = True  # the first loop reads what a previous run left pending
        self._waiting_woken = False
        self._wake = asyncio.Event()
        self._open = asyncio.Event()
        self._stopping = False
        self._last_housekeeping = float("-inf")
        self.overflow = 0
        self.sent = 0

    @property
    def channels(self) -> Mapping[str, Channel]:
        return self._channels

    def add_channel(self, channel: Channel) -> None:
        self._channels[channel.name] = channel

    def submit(self, jobs: list[Job]) -> None:
        """Queue committed jobs for immediate delivery; a full queue leaves them to the table scan."""
        for job in jobs:
            if job.delivery_id in self._queued:
                continue
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                self.overflow += 1
                self._rescan = True
                continue
            self._queued.add(job.delivery_id)
        self._wake.set()

    def wake_waiting(self) -> None:
        """A subscriber appeared: messages waiting for one are tried again."""
        self._waiting_woken = True
        self._wake.set()

    def open(self) -> None:
        """Start delivering; called once every channel is attached, so recovered rows find theirs."""
        self._open.set()

    def stop(self) -> None:
        self._stopping = True
        self._open.set()
        self._wake.set()

    async def run(self) -> None:
        await self._open.wait()
        while not self._stopping:
            try:
                await self._run_once()
            except Exception:
                # The database may be briefly unavailable: what is not recorded is still pending in
                # the table, so log, wait, and read the table again.
                log.exception("outbox iteration failed; retrying in %.1fs", self._config.poll_interval)
                self._rescan = True
                await asyncio.sleep(self._config.poll_interval)

    async def _run_once(self) -> None:
        loop = asyncio.get_running_loop()
        if self._waiting_woken:
            self._waiting_woken = False
            await self._requeue_waiting()
        if self._rescan:
            self._rescan = False
            await self._scan()
        if loop.time() - self._last_housekeeping > _HOUSEKEEPING_EVERY:
            self._last_housekeeping = loop.time()
            await self._expire_waiting()
        if self._queue.empty():
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._config.poll_interval)
            except TimeoutError:
                pass
            return
        batch: list[Job] = []
        while not self._queue.empty() and len(batch) < self._config.batch_size:
            batch.append(self._queue.get_nowait())
        await self._work(batch)

    async def _work(self, batch: list[Job]) -> None:
        results: list[tuple[Job, Outcome]] = []
        for job in batch:
            channel = self._channels[job.channel]
            try:
                outcome = await channel.deliver(job)
            except Exception as exc:  # a channel bug must not stop the outbox
                log.exception("delivery %s on %s failed", job.delivery_id, job.channel)
                outcome = Outcome(State.PENDING, error=f"{type(exc).__name__}: {exc}")
            results.append((job, outcome))
        try:
            await self._record(results)
        finally:
            for job in batch:
                self._queued.discard(job.delivery_id)
        self.sent += sum(1 for _, o in results if o.state is State.SENT)

    async def _record(self, results: list[tuple[Job, Outcome]]) -> None:
        now = utcnow()
        retry_at = now + timedelta(seconds=self._config.poll_interval * 5)
        async with self._sessions() as session:
            for job, outcome in results:
                values: dict[str, Any] = {
                    "state": outcome.state.value,
                    "attempts": Delivery.attempts + 1,
                    "updated_at": now,
                    "last_error": outcome.error,
                }
                if outcome.state is State.PENDING:
                    values["next_attempt_at"] = retry_at
                    self._rescan = True
                await session.execute(update(Delivery).where(Delivery.id == job.delivery_id).values(**values))
                if outcome.delivered:
                    await session.execute(
                        update(Receipt)
                        .where(Receipt.message_id == job.message_id)
                        .values(
                            delivered_count=Receipt.delivered_count + outcome.delivered,
                            status=case((Receipt.status == "queued", "delivered"), else_=Receipt.status),
                            updated_at=now,
                        )
                    )
            await session.commit()

    async def _scan(self) -> None:
        """Queue due pending deliveries from the table, oldest first, as far as the queue has room."""
        room = self._queue.maxsize - self._queue.qsize()
        if room <= 0:
            self._rescan = True
            return
        async with self._sessions() as session:
            rows = await session.execute(
                select(Delivery, Message, Receipt.id, Topic.name)
                .join(Message, Delivery.message_id == Message.id)
                .join(Receipt, Receipt.message_id == Message.id)
                .join(Topic, Message.topic_id == Topic.id)
                .where(
                    Delivery.state == State.PENDING.value,
                    Delivery.next_attempt_at <= utcnow(),
                    # rows of a channel switched off stay pending until it is on again
                    Delivery.channel.in_(list(self._channels)),
                )
                .order_by(Delivery.id)
                .limit(room)
            )
            jobs = [
                Job(
                    d.id,
                    d.channel,
                    m.id,
                    topic,
                    d.payload.encode() if d.event else envelope(m, receipt_id, topic),
                    d.event,
                )
                for d, m, receipt_id, topic in rows.all()
                if d.id not in self._queued
            ]
        if len(jobs) == room:
            self._rescan = True
        if jobs:
            log.info("outbox: %d pending deliveries queued from the table", len(jobs))
            self.submit(jobs)

    async def _requeue_waiting(self) -> None:
        async with self._sessions() as session:
            result = await session.execute(
                update(Delivery)
                .where(Delivery.state == State.WAITING.value)
                .values(state=State.PENDING.value, next_attempt_at=utcnow())
            )
            await session.commit()
        if getattr(result, "rowcount", 0):
            self._rescan = True

    async def _expire_waiting(self) -> None:
        cutoff = utcnow() - timedelta(seconds=self._config.mqtt_pending_ttl)
        async with self._sessions() as session:
            await session.execute(
                update(Delivery)
                .where(Delivery.state == State.WAITING.value, Delivery.created_at < cutoff)
                .values(state=State.EXPIRED.value, updated_at=utcnow(), last_error="no subscriber in time")
            )
            await session.commit()
