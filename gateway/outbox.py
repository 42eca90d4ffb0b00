"""The outbox worker: works the ``deliveries`` table so nothing accepted is lost.

Freshly committed jobs arrive in memory (``submit``) and go out at once; the table is the truth, read at
start (crash recovery), whenever the in-memory queue overflowed, when a retry falls due, and when an MQTT
subscriber appears for messages that were waiting for one. State changes are written by one recorder,
beside the delivering loop, in one transaction for all the outcomes that finished meanwhile, together with
the receipts they move; it takes turns with the group-commit writer for SQLite's write lock. A job stays
counted in memory until its outcome is written, so a table scan never queues it twice. Delivery is at
least once: a crash between a send and its state write sends again after the restart, and every payload
carries the message id so receivers can drop the duplicate.

Channels are attached with ``add_channel``:

- *broadcast* channels (MQTT) get every message and every event; the publish pipeline and
  ``gateway.actions`` add them for each channel in ``channels``. An event gets a row. A message gets a
  flag on its receipt instead (``Receipt.broadcast_pending``), and a job without a row
  (``Job.delivery_id`` ``None``): sent at once, as nearly every one is, the flag is cleared and no row is
  left; otherwise (nobody subscribed, the broker failed) the recorder writes a row with that outcome,
  which is worked like any other from there. Flagged receipts are read like pending rows (at start, after
  an overflow). One flag per message, so the outbox takes one broadcast channel (there is one: MQTT).
  Other channels (webhooks) only get the rows their owner adds for particular targets.
- a channel with ``concurrency`` 0 is worked inline by the outbox loop, in order (MQTT subscribers see
  messages in the order they were accepted). A channel with ``concurrency`` N has its own lane of N
  workers, so a slow HTTP target delays neither MQTT nor other targets. A lane holds at most
  ``_LANE_BACKLOG`` jobs; the rest of a large fan-out waits in the table and is read into the lane when
  half of its backlog has gone out, so the lane never runs dry.
- a failed attempt (``State.PENDING``) is tried again after the channel's ``RetryPolicy`` delay:
  exponential backoff with jitter, ``Retry-After`` honoured up to the ceiling; after ``max_attempts`` the
  row is ``dead``. ``attempts``, ``last_error`` and ``next_attempt_at`` are kept on the row, so a restart
  resumes the schedule where it stopped.

When a message reaches its first subscriber its receipt moves from ``queued`` to ``delivered``; the hook
set with ``on_delivered`` may add event rows (webhooks' ``delivered``) in that same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Connection, bindparam, case, false, func, literal_column, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.channels import BroadcastChannel, Channel, Job, Outcome, State
from gateway.config import OutboxConfig
from gateway.envelope import as_utc, envelope
from gateway.json_output import compact_json
from gateway.storage.bulk import ListedStatement, in_lists, insert_rows
from gateway.storage.journal import Journal
from gateway.storage.models import Delivery, Message, Receipt, Topic, utcnow
from gateway.storage.numbering import number_new_deliveries

__all__ = ["PENDING_BROADCASTS", "DeliveredHook", "Outbox", "RetryPolicy", "event_job", "event_row"]

log = logging.getLogger(__name__)

_QUEUE_SIZE = 10_000  # jobs held in memory (queued, in a lane, in flight); beyond that they wait in the table
_LANE_BACKLOG = 1_000  # jobs waiting for one concurrent lane; beyond that they wait in the table
_HOUSEKEEPING_EVERY = 30.0  # seconds between expiry sweeps of waiting deliveries
# Channels attached without a policy (MQTT) retry a failed publish without a cap, at most this far apart:
# a failure there is the local broker's, and a message must not be given up because of it.
_DEFAULT_RETRY_CEILING = 300.0

# Outcomes that end a target's delivery without reaching it, and the states in which one may still arrive.
_GIVEN_UP = frozenset({State.FAILED, State.DEAD, State.EXPIRED})
_STILL_OPEN = (State.PENDING.value, State.WAITING.value, State.SENT.value)

_deliveries = Delivery.__table__
_receipts = Receipt.__table__
# A failed attempt to try again at ``b_next``, as an executemany statement (each row has its own time).
_RETRY = (
    update(_deliveries)
    .where(_deliveries.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        last_error=bindparam("b_error"),
        attempts=_deliveries.c.attempts + bindparam("b_inc"),
        updated_at=bindparam("b_now"),
        next_attempt_at=bindparam("b_next"),
    )
)
# The recorder's statements, each with one IN list (``ListedStatement``): a delivery's outcome, receipts
# about to become ``delivered``, and the targets reached added to receipts. The receipt states are
# literal SQL, so the IN list is the only list to render.
_SETTLE = ListedStatement(
    lambda ids: (
        update(_deliveries)
        .where(_deliveries.c.id.in_(ids))
        .values(
            state=bindparam("b_state"),
            last_error=bindparam("b_error"),
            attempts=_deliveries.c.attempts + bindparam("b_inc"),
            updated_at=bindparam("b_now"),
        )
    )
)
# Messages whose broadcast is pending, oldest first: read at start and after an overflow, through the
# partial index that holds only these (``Receipt.broadcast_pending``), not the whole receipts table.
PENDING_BROADCASTS = select(Receipt.message_id).where(Receipt.broadcast_pending).order_by(Receipt.message_id)
# Receipts whose message's broadcast settled without reaching anyone (it waits in a delivery row now).
_SETTLE_BROADCAST = ListedStatement(
    lambda messages: (
        update(_receipts).where(_receipts.c.message_id.in_(messages)).values(broadcast_pending=false())
    )
)
_CREDITABLE = [literal_column("'queued'"), literal_column("'failed'")]
_MOVING = ListedStatement(
    lambda messages: select(_receipts.c.message_id).where(
        _receipts.c.message_id.in_(messages), _receipts.c.status.in_(_CREDITABLE)
    )
)


def _credit(settling: bool) -> ListedStatement:
    """A ``queued`` receipt (or a ``failed`` one, on a late confirmation) becomes ``delivered`` as the
    targets reached are added; ``settling``: the message's broadcast is among them, and its flag is
    cleared in the same statement (one UPDATE of the receipt per push, not two)."""
    settled = {"broadcast_pending": false()} if settling else {}  # literal SQL: the IN list is the only list
    return ListedStatement(
        lambda messages: (
            update(_receipts)
            .where(_receipts.c.message_id.in_(messages))
            .values(
                delivered_count=_receipts.c.delivered_count + bindparam("b_reached"),
                updated_at=bindparam("b_now"),
                status=case(
                    (_receipts.c.status.in_(_CREDITABLE), literal_column("'delivered'")),
                    else_=_receipts.c.status,
                ),
                **settled,
            )
        )
    )


_CREDIT = _credit(settling=False)
_CREDIT_SETTLING = _credit(settling=True)


class DeliveredHook(Protocol):
    """Told when receipts become ``delivered`` (``gateway.actions`` announces it to webhooks and MQTT)."""

    async def listened(self, topics: set[str]) -> set[str]:
        """Of ``topics``, those whose delivered receipts anyone would be told about: the outbox looks up
        which receipts just moved only for messages on these (a read per batch saved when nobody listens)."""
        ...

    async def delivered(
        self, session: Any, reached: Mapping[str, str], now: datetime
    ) -> list[Callable[[], Job]]:
        """Add event rows to ``session`` for the messages whose receipts just became ``delivered`` (message
        id -> topic name); return makers of their jobs, called once the commit has given the rows ids."""
        ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt is tried again: exponential backoff with jitter, and a cap on attempts.

    After the n-th failed attempt the wait is ``min(ceiling, base * 2**(n-1))``, multiplied by a random
    factor between 0.5 and 1 ("equal jitter": never less than half the step, so the backoff still grows,
    but deliveries that failed together spread out). A target's ``Retry-After`` lengthens the wait, up to
    ``ceiling``. ``max_attempts`` 0 means no cap.
    """

    base: float
    ceiling: float
    max_attempts: int = 0

    def delay(self, attempts: int, jitter: float, retry_after: float | None = None) -> float:
        """Seconds to wait after ``attempts`` failed attempts; ``jitter`` is in [0, 1)."""
        step = min(self.ceiling, self.base * 2.0 ** min(attempts - 1, 64)) * (0.5 + jitter / 2)
        if retry_after is not None:
            step = max(step, min(retry_after, self.ceiling))
        return step

    def exhausted(self, attempts: int) -> bool:
        return self.max_attempts > 0 and attempts >= self.max_attempts


def event_row(
    message_id: str, channel: str, event: str, payload: Mapping[str, Any], now: datetime, target: str = ""
) -> Delivery:
    """An outbox row for an event, its JSON kept as it was when the event happened."""
    return Delivery(
        message_id=message_id,
        channel=channel,
        target=target,
        event=event,
        payload=compact_json(payload).decode(),
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )


def event_job(delivery: Delivery, topic: str) -> Job:
    """The job of a committed event row (its payload is stored on the row)."""
    return Job(
        delivery.id,
        delivery.channel,
        delivery.message_id,
        topic,
        (delivery.payload or "").encode(),
        delivery.event,
        delivery.target,
        delivery.attempts or 0,
    )


@dataclass(slots=True)
class _Lane:
    channel: Channel
    broadcast: bool
    retry: RetryPolicy
    concurrency: int
    queue: asyncio.Queue[Job] = field(default_factory=lambda: asyncio.Queue(maxsize=_LANE_BACKLOG))
    held: int = 0  # jobs from entering ``queue`` until their outcome is recorded
    spilled: bool = False  # rows wait in the table for room in ``queue``: read them when it half empties


class Outbox:
    def __init__(
        self,
        sessions: async_sessionmaker[Any],
        journal: Journal,
        config: OutboxConfig,
    ) -> None:
        self._sessions = sessions
        self._journal = journal  # where outcomes are written (``gateway.storage.journal``)
        self._config = config
        self._lanes: dict[str, _Lane] = {}
        self._broadcast: dict[str, BroadcastChannel] = {}
        self._channels: dict[str, Channel] = {}  # ``lanes``
        # Jobs to work, in order: a deque, not an ``asyncio.Queue``, as nothing waits on it but the loop
        # (woken by ``_wake``) and its length is bounded through ``_queued``; the queue's put and get cost
        # 0.6 µs per push more.
        self._queue: deque[Job] = deque()
        self._queued: set[_Key] = set()  # every job in memory, from submit until its outcome is recorded
        # Outcomes not recorded yet, of the loop's inline attempts and the lanes' workers. One recorder
        # writes them while the loop goes on delivering: what piles up meanwhile goes in its next
        # transaction, so recording never holds delivery up and transactions grow with the load.
        self._finished: list[tuple[Job, Outcome]] = []
        self._to_record = asyncio.Event()
        self._workers: set[asyncio.Task[None]] = set()
        # Jobs recorded while a scan ran: the scan may have read their rows as still pending.
        self._recorded_in_scan: set[_Key] | None = None
        self._on_delivered: DeliveredHook | None = None
        self._rescan = True  # the first loop reads what a previous run left pending
        self._due_at = math.inf  # loop time when the next retry in the table falls due
        self._waiting_woken = False
        # Subscribers appeared (``wake_waiting``) so far, and how many when the recorder last took
        # outcomes: a ``waiting`` outcome recorded after a wake-up's requeue must be requeued too.
        self._wakes = 0
        self._wakes_taken = 0
        self._wake = asyncio.Event()
        self._open = asyncio.Event()
        self._stopping = False
        self._last_housekeeping = float("-inf")
        self.overflow = 0
        self.sent = 0

    @property
    def channels(self) -> Mapping[str, BroadcastChannel]:
        """The broadcast channels: each gets a row for every message and every event."""
        return self._broadcast

    @property
    def lanes(self) -> Mapping[str, Channel]:
        """Every attached channel, broadcast or targeted, by name (read per push: kept, not rebuilt)."""
        return self._channels

    def add_channel(
        self,
        channel: Channel,
        *,
        broadcast: bool = True,
        retry: RetryPolicy | None = None,
        concurrency: int = 0,
    ) -> None:
        if broadcast and self._broadcast and channel.name not in self._broadcast:
            # a message's pending broadcast is one flag on its receipt (``Receipt.broadcast_pending``)
            raise ValueError(f"{channel.name}: the outbox takes one broadcast channel")
        policy = retry or RetryPolicy(self._config.poll_interval * 5, _DEFAULT_RETRY_CEILING)
        self._lanes[channel.name] = _Lane(channel, broadcast, policy, concurrency)
        self._channels[channel.name] = channel
        if broadcast:
            self._broadcast[channel.name] = cast(BroadcastChannel, channel)

    def on_delivered(self, hook: DeliveredHook) -> None:
        self._on_delivered = hook

    def submit(self, jobs: list[Job]) -> None:
        """Queue committed jobs for immediate delivery; a full queue leaves them to the table scan."""
        for job in jobs:
            key = _key(job)
            if key in self._queued:
                continue
            if len(self._queued) >= _QUEUE_SIZE:
                self.overflow += 1
                self._rescan = True
                continue
            self._queue.append(job)
            self._queued.add(key)
        self._wake.set()

    def wake_waiting(self) -> None:
        """A subscriber appeared: messages waiting for one are tried again."""
        self._wakes += 1
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
        for lane in self._lanes.values():
            for n in range(lane.concurrency):
                task = asyncio.create_task(self._lane_worker(lane), name=f"outbox-{lane.channel.name}-{n}")
                self._workers.add(task)
                task.add_done_callback(self._workers.discard)
        recorder = asyncio.create_task(self._recorder(), name="outbox-recorder")
        try:
            while not self._stopping:
                try:
                    await self._run_once()
                except Exception:
                    # The database may be briefly unavailable: what is not recorded is still pending in
                    # the table, so log, wait, and read the table again.
                    log.exception("outbox iteration failed; retrying in %.1fs", self._config.poll_interval)
                    self._rescan = True
                    await asyncio.sleep(self._config.poll_interval)
        finally:
            # Attempts in flight are abandoned: their rows stay pending and are sent after the restart.
            workers = list(self._workers)
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._stopping = True
            self._to_record.set()
            await recorder  # it records what was finished, then ends

    async def _run_once(self) -> None:
        loop = asyncio.get_running_loop()
        if self._waiting_woken:
            self._waiting_woken = False
            await self._requeue_waiting()
        if self._rescan or loop.time() >= self._due_at:
            self._rescan = False
            self._due_at = math.inf
            await self._scan()
        if loop.time() - self._last_housekeeping > _HOUSEKEEPING_EVERY:
            self._last_housekeeping = loop.time()
            await self._expire_waiting()
        if not self._queue:
            if self._rescan:  # asked for during this pass (a lane half emptied): scan without waiting
                return
            self._wake.clear()
            timeout = min(self._config.poll_interval, max(0.0, self._due_at - loop.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            return
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(len(queue), self._config.batch_size))]
        await self._work(batch)

    async def _work(self, batch: list[Job]) -> None:
        inline: dict[str, list[Job]] = defaultdict(list)  # channel -> its jobs, in order
        for job in batch:
            lane = self._lanes[job.channel]
            if not lane.concurrency:
                inline[job.channel].append(job)
                continue
            try:
                lane.queue.put_nowait(job)
                lane.held += 1
            except asyncio.QueueFull:  # the lane is backed up: the row waits in the table meanwhile
                self._queued.discard(_key(job))
                self.overflow += 1
                lane.spilled = True
        for name, jobs in inline.items():
            broadcast = self._broadcast.get(name)
            if broadcast is None:
                self._finished += [(job, await self._attempt(self._lanes[name].channel, job)) for job in jobs]
            else:
                self._finished += zip(jobs, await self._attempt_all(broadcast, jobs), strict=True)
        self._to_record.set()

    async def _lane_worker(self, lane: _Lane) -> None:
        while True:
            job = await lane.queue.get()
            if lane.spilled and lane.queue.qsize() <= lane.queue.maxsize // 2:
                lane.spilled = False  # read the rows waiting in the table before the lane runs dry
                self._rescan = True
                self._wake.set()
            outcome = await self._attempt(lane.channel, job)
            self._finished.append((job, outcome))
            self._to_record.set()

    @staticmethod
    async def _attempt(channel: Channel, job: Job) -> Outcome:
        try:
            return await channel.deliver(job)
        except Exception as exc:  # a channel bug must not stop the outbox
            log.exception("delivery %s on %s failed", job.delivery_id, job.channel)
            return Outcome(State.PENDING, error=f"{type(exc).__name__}: {exc}")

    @staticmethod
    async def _attempt_all(channel: BroadcastChannel, jobs: list[Job]) -> list[Outcome]:
        """``_attempt`` for jobs a broadcast channel takes at once (``deliver_many``)."""
        try:
            return await channel.deliver_many(jobs)
        except Exception as exc:
            log.exception("%d deliveries on %s failed", len(jobs), channel.name)
            return [Outcome(State.PENDING, error=f"{type(exc).__name__}: {exc}")] * len(jobs)

    async def _recorder(self) -> None:
        """Write finished outcomes, all that are there in one transaction, until the outbox stops."""
        while True:
            await self._to_record.wait()
            self._to_record.clear()
            results, self._finished = self._finished, []
            wakes_before, self._wakes_taken = self._wakes_taken, self._wakes
            if results:
                try:
                    makers = await self._write(results)
                except Exception:
                    # Unrecorded rows are still pending in the table. They leave memory first, so the table
                    # scan a poll interval from now (as after any failed pass) sends them again: a delivery
                    # may so be sent twice, never lost. Recording pauses as long, not to hammer the database.
                    log.exception("outbox: outcomes could not be recorded; they will be sent again")
                    self._forget(results)
                    self._due_at = min(
                        self._due_at, asyncio.get_running_loop().time() + self._config.poll_interval
                    )
                    if not self._stopping:
                        await asyncio.sleep(self._config.poll_interval)
                else:
                    self._forget(results)
                    # A subscriber that appeared since the outcomes taken last time may have had its
                    # requeue before these were written: one of them found waiting is tried again.
                    woken = self._wakes != wakes_before
                    if woken and any(outcome.state is State.WAITING for _, outcome in results):
                        self._waiting_woken = True
                        self._wake.set()
                    self.sent += sum(1 for _, o in results if o.state is State.SENT)
                    if makers:
                        self.submit([make() for make in makers])
            if self._finished:
                self._to_record.set()
            elif self._stopping:
                return

    def _forget(self, results: list[tuple[Job, Outcome]]) -> None:
        """The jobs' outcomes are written (or given up on): they leave memory, and their lanes' count."""
        for job, _ in results:
            self._queued.discard(_key(job))
            lane = self._lanes[job.channel]
            if lane.concurrency:
                lane.held -= 1
        if self._recorded_in_scan is not None:
            self._recorded_in_scan.update(_key(job) for job, _ in results)

    async def confirm(self, results: list[tuple[Job, Outcome]]) -> None:
        """Record what a target confirmed after its send was recorded as ``sent`` (an Expo push receipt):
        ``Outcome(SENT, delivered=1)`` credits the receipt, ``Outcome(FAILED, ...)`` marks the row failed.
        Not an attempt: the row's attempt count stays."""
        makers = await self._write(results, attempt=False)
        if makers:
            self.submit([make() for make in makers])

    async def _write(
        self, results: list[tuple[Job, Outcome]], *, attempt: bool = True
    ) -> list[Callable[[], Job]]:
        """Record ``results`` in one transaction with a few statements, not one per job: the outbox records
        thousands of outcomes a second, and each statement is a round trip to the driver."""
        now = utcnow()
        loop_now = asyncio.get_running_loop().time()
        # Rows whose next attempt time stays, by (state, error): most outcomes are alike (sent, no error),
        # and one UPDATE ... WHERE id IN (...) per kind costs far less per row than an executemany.
        settled: dict[tuple[str, str | None], list[int]] = defaultdict(list)
        retried: list[dict[str, Any]] = []  # rows to try again at ``b_next``
        cleared: set[str] = set()  # messages whose broadcast settled: their receipts' flags go
        handed: list[dict[str, Any]] = []  # rows for broadcasts that did not go out (``_handed_row``)
        credit: dict[str, int] = defaultdict(int)  # message id -> targets reached
        topics: dict[str, str] = {}  # message id -> topic name, of the messages credited
        given_up: set[str] = set()
        for job, outcome in results:
            state = outcome.state
            next_at = now
            if state is State.PENDING:
                policy = self._lanes[job.channel].retry
                if policy.exhausted(job.attempts + 1):
                    state = State.DEAD
                    log.warning(
                        "delivery %s on %s is dead after %d attempts: %s",
                        job.delivery_id,
                        job.channel,
                        job.attempts + 1,
                        outcome.error,
                    )
                else:
                    delay = policy.delay(job.attempts + 1, random.random(), outcome.retry_after)
                    self._due_at = min(self._due_at, loop_now + delay)
                    next_at = now + timedelta(seconds=delay)
                    if job.delivery_id is not None:
                        retried.append(
                            {
                                "b_id": job.delivery_id,
                                "b_state": state.value,
                                "b_error": outcome.error,
                                "b_inc": int(attempt),
                                "b_now": now,
                                "b_next": next_at,
                            }
                        )
            if job.delivery_id is None:  # a flagged broadcast: the flag goes, a row only if it waits
                cleared.add(job.message_id)
                if state is not State.SENT:
                    handed.append(_handed_row(job, state, outcome.error, int(attempt), next_at, now))
            elif state is not State.PENDING:
                settled[(state.value, outcome.error)].append(job.delivery_id)
            # Only the message itself counts as delivered; an event reaching a subscriber does not.
            if job.event:
                continue
            if outcome.delivered:
                credit[job.message_id] += outcome.delivered
                topics[job.message_id] = job.topic
            elif state in _GIVEN_UP:
                given_up.add(job.message_id)
        watched: list[str] = []
        if topics and self._on_delivered is not None:  # only credited messages can become delivered
            listened = await self._on_delivered.listened(set(topics.values()))
            watched = [message_id for message_id, topic in topics.items() if topic in listened]
        outcomes = _Outcomes(settled, retried, cleared, handed, credit, given_up, watched, now, int(attempt))
        if not watched:  # nobody is told of delivered receipts: one hand-off to the journal
            # Answered at its commit, not once synced: outcomes only spare what the durable rows would
            # have sent again (``gateway.storage.journal``).
            await self._journal.run(outcomes.record, durable=False)
            return []
        assert self._on_delivered is not None
        async with self._journal.exclusive(), self._sessions() as session:
            reached = await session.run_sync(lambda sync: outcomes.record(sync.connection()))
            makers: list[Callable[[], Job]] = []
            if reached:
                makers = await self._on_delivered.delivered(session, {m: topics[m] for m in reached}, now)
                await number_new_deliveries(session, written=True)  # the updates above took the lock
            await session.commit()
        return makers

    async def _scan(self) -> None:
        """Queue due pending deliveries from the table, oldest first: for each lane as many as its backlog
        has room for, for the inline channels as many as memory allows; remember when the next one that is
        not due yet falls due."""
        now = utcnow()
        inline = [name for name, lane in self._lanes.items() if not lane.concurrency]
        self._recorded_in_scan = set()
        try:
            await self._scan_lanes(now, inline)
        finally:
            self._recorded_in_scan = None

    async def _scan_lanes(self, now: datetime, inline: list[str]) -> None:
        """``_scan`` itself; what the recorder writes meanwhile is kept from being queued again."""
        async with self._sessions() as session:
            for name, lane in self._lanes.items():
                if not lane.concurrency:
                    continue
                room = min(lane.queue.maxsize - lane.queue.qsize(), _QUEUE_SIZE - len(self._queued))
                if room <= 0:
                    self._rescan = True
                    continue
                # What the table still shows pending of this lane's jobs in memory comes first by id.
                jobs, more = await self._pending(session, [name], room, lane.held + len(self._queue), now)
                lane.spilled = more  # read the rest when the lane half empties
                for job in jobs:
                    lane.queue.put_nowait(job)  # never full: ``room`` was free
                    self._queued.add(_key(job))
                lane.held += len(jobs)
                if jobs:
                    log.info("outbox: %d pending %s deliveries queued from the table", len(jobs), name)
            room = _QUEUE_SIZE - len(self._queued)
            if inline and room <= 0:
                self._rescan = True
            elif inline:
                held = len(self._queued) - sum(lane.held for lane in self._lanes.values())
                jobs, more = await self._pending(session, inline, room, held, now)
                if more:
                    self._rescan = True
                if jobs:
                    log.info("outbox: %d pending deliveries queued from the table", len(jobs))
                    self.submit(jobs)
            pending = (Delivery.state == State.PENDING.value, Delivery.channel.in_(list(self._lanes)))
            later = await session.scalar(
                select(func.min(Delivery.next_attempt_at)).where(*pending, Delivery.next_attempt_at > now)
            )
        if later is not None:
            wait = (as_utc(later) - now).total_seconds()
            self._due_at = min(self._due_at, asyncio.get_running_loop().time() + max(0.0, wait))

    async def _pending(
        self, session: Any, channels: list[str], room: int, held: int, now: datetime
    ) -> tuple[list[Job], bool]:
        """Up to ``room`` due pending deliveries of ``channels`` that are not in memory yet, and whether the
        table may hold more: rows oldest first, then flagged broadcasts (``Receipt.broadcast_pending``)
        oldest first.

        Rows are read as plain columns, ``room + held`` of them at most (and as many flagged), where
        ``held`` bounds how many of those in memory the table can still show pending; each message's
        envelope is built once."""
        # rows of a channel switched off stay pending until it is on again
        rows = await session.execute(
            select(
                Delivery.id,
                Delivery.channel,
                Delivery.message_id,
                Delivery.target,
                Delivery.event,
                Delivery.payload,
                Delivery.attempts,
            )
            .where(
                Delivery.state == State.PENDING.value,
                Delivery.channel.in_(channels),
                Delivery.next_attempt_at <= now,
            )
            .order_by(Delivery.id)
            .limit(room + held)
        )
        flagged: list[str] = []
        broadcast = [name for name in channels if name in self._broadcast]
        if broadcast:  # at most one (``add_channel``)
            found_flagged = await session.scalars(PENDING_BROADCASTS.limit(room + held))
            flagged = list(found_flagged.all())
        recorded = self._recorded_in_scan or set()
        fetched = rows.all()
        candidates = [
            *fetched,
            *((None, broadcast[0], message_id, "", "", None, 0) for message_id in flagged),
        ]
        picked = [
            row
            for row in candidates
            if (key := row[0] if row[0] is not None else (row[1], row[2])) not in self._queued
            and key not in recorded
        ][:room]
        message_ids = list({row[2] for row in picked})
        messages: dict[str, tuple[str, bytes | None]] = {}  # id -> topic, envelope
        wanted = {row[2] for row in picked if not row[4]}  # messages whose own envelope is sent
        for chunk in in_lists(message_ids):
            found = await session.execute(
                select(Message, Receipt.id, Topic.name)
                .join(Receipt, Receipt.message_id == Message.id)
                .join(Topic, Message.topic_id == Topic.id)
                .where(Message.id.in_(chunk))
            )
            for message, receipt_id, topic in found:
                body = envelope(message, receipt_id, topic) if message.id in wanted else None
                messages[message.id] = (topic, body)
        jobs: list[Job] = []
        for delivery_id, channel, message_id, target, event, payload, attempts in picked:
            known = messages.get(message_id)
            if known is None:
                continue  # the message is being deleted, and its deliveries with it
            topic, body = known
            data = (payload or "").encode() if event else body or b""
            jobs.append(Job(delivery_id, channel, message_id, topic, data, event, target, attempts))
        return jobs, len(picked) == room or room + held in (len(fetched), len(flagged))

    async def _requeue_waiting(self) -> None:
        # After the recorder's transaction in progress, which may be writing ``waiting`` outcomes.
        async with self._journal.exclusive(), self._sessions() as session:
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


@dataclass(slots=True)
class _Outcomes:
    """What one recorder transaction writes, as statements on a synchronous connection: in the journal, or
    through an async session's ``run_sync`` when a hook adds rows to the same transaction."""

    settled: dict[tuple[str, str | None], list[int]]  # (state, error) -> delivery ids whose next time stays
    retried: list[dict[str, Any]]  # rows to try again at ``b_next`` (``_RETRY``)
    cleared: set[str]  # messages whose broadcast settled (``Receipt.broadcast_pending`` cleared)
    handed: list[dict[str, Any]]  # new rows: flagged broadcasts that did not go out
    credit: dict[str, int]  # message id -> targets reached
    given_up: set[str]  # messages with a target that gave up
    watched: list[str]  # messages whose receipts' move to ``delivered`` someone is told of
    now: datetime
    attempt: int  # 1 when the outcomes are attempts, 0 for later confirmations

    def record(self, connection: Connection) -> list[str]:
        """Write everything; returns the ``watched`` messages whose receipts just became ``delivered``."""
        for (state_value, error), ids in self.settled.items():
            params = {"b_state": state_value, "b_error": error, "b_inc": self.attempt, "b_now": self.now}
            _SETTLE.run(connection, ids, params)
        if self.retried:
            connection.execute(_RETRY, self.retried)
        insert_rows(connection, _deliveries, self.handed)
        reached = self._credit_receipts(connection) if self.credit else []
        unreached = [message_id for message_id in self.cleared if message_id not in self.credit]
        if unreached:
            _SETTLE_BROADCAST.run(connection, unreached, {})
        if self.given_up:
            self._fail_receipts(connection)
        return reached

    def _credit_receipts(self, connection: Connection) -> list[str]:
        """Add the targets reached to each receipt; returns those of the ``watched`` messages whose receipts
        just became ``delivered`` (from ``queued``, or ``failed`` when a late confirmation arrives)."""
        reached: list[str] = _MOVING.run(connection, self.watched, {}) if self.watched else []
        # (targets reached, whether the broadcast settled) -> messages
        by_count: dict[tuple[int, bool], list[str]] = defaultdict(list)
        cleared = self.cleared
        for message_id, n in self.credit.items():
            by_count[(n, message_id in cleared)].append(message_id)
        for (n, settling), message_ids in by_count.items():
            statement = _CREDIT_SETTLING if settling else _CREDIT
            statement.run(connection, message_ids, {"b_reached": n, "b_now": self.now})
        return reached

    def _fail_receipts(self, connection: Connection) -> None:
        """A receipt still ``queued`` becomes ``failed`` once every target of its message has given up:
        no delivery of the message itself is pending, waiting or sent (unconfirmed) any more, and its
        broadcast is not pending (written before this, in the same transaction)."""
        open_rows = (
            select(_deliveries.c.id)
            .where(
                _deliveries.c.message_id == _receipts.c.message_id,
                _deliveries.c.event == "",
                _deliveries.c.state.in_(_STILL_OPEN),
            )
            .exists()
        )
        connection.execute(
            update(_receipts)
            .where(
                _receipts.c.message_id.in_(self.given_up),
                _receipts.c.status == "queued",
                ~open_rows,
                ~_receipts.c.broadcast_pending,
            )
            .values(status="failed", updated_at=self.now)
        )


# What identifies a job in memory: its delivery row's id, or (channel, message id) for a flagged broadcast.
_Key = int | tuple[str, str]


def _key(job: Job) -> _Key:
    return job.delivery_id if job.delivery_id is not None else (job.channel, job.message_id)


def _handed_row(
    job: Job, state: State, error: str | None, attempts: int, next_attempt_at: datetime, now: datetime
) -> dict[str, Any]:
    """The delivery row a flagged broadcast becomes when it did not go out: waiting for a subscriber, to
    be tried again, or given up. Its ``created_at`` is when it got the row, a few milliseconds after the
    message was accepted (what a waiting row's expiry counts from)."""
    return {
        "message_id": job.message_id,
        "channel": job.channel,
        "target": "",
        "event": "",
        "state": state.value,
        "attempts": attempts,
        "last_error": error,
        "next_attempt_at": next_attempt_at,
        "created_at": now,
        "updated_at": now,
    }
