"""Group commit: concurrent publishes share one transaction and one fsync.

Each caller hands its rows to ``write`` and is resumed only after the commit that contains them, so an
edge answers (HTTP 200, MQTT PUBACK) only for data that is on disk. The queue is bounded: when the disk
falls behind, callers wait instead of memory growing.

A row is the values of some columns of a table, as a tuple (``Row``, ``gateway.storage.bulk.Columns``),
not an ORM object: building, instrumenting and inspecting three ORM objects per push cost more than their
INSERTs. ``orm_row`` turns an ORM object into one for the rare caller that has one. A batch's transaction
is one function handed to the journal (``gateway.storage.journal``), so its statements do not each wait
for the event loop; it goes to the journal process pickled, and comes back with the delivery ids it gave.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert, inspect
from sqlalchemy.exc import OperationalError

from gateway.errors import Unavailable
from gateway.storage.bulk import Columns, columns, insert_values
from gateway.storage.journal import Journal
from gateway.storage.models import Base, Delivery
from gateway.storage.numbering import reserve_delivery_ids

__all__ = ["Done", "GroupCommitWriter", "Row", "orm_row"]

log = logging.getLogger(__name__)

# A row to insert: the columns it gives and their values in that order (columns left out get their
# defaults). A ``deliveries`` row without an ``id`` column is numbered by the commit, which hands the ids
# back to its writer.
Row = tuple[Columns, tuple[Any, ...]]

_MAX_BATCH = 500  # rows groups per transaction; bounds the transaction's size and latency
_IN_FLIGHT = 2  # transactions handed to the journal at once (``GroupCommitWriter.run``)
# Told once what became of a group of rows: the ids the commit gave its ``deliveries`` rows without one
# (in order), or the error to answer with.
Done = Callable[[list[int] | None, BaseException | None], None]
_Item = tuple[Sequence[Row], Done]
_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]


class GroupCommitWriter:
    def __init__(self, journal: Journal, queue_size: int) -> None:
        self._journal = journal
        # Groups waiting for a place in the journal, at most ``queue_size``: a deque and two events rather
        # than an ``asyncio.Queue``, whose put and get (and the checks around them) cost the event loop 1 µs
        # per push; only the writer's loop takes from it, and callers wait only when it is full.
        self._waiting: deque[_Item] = deque()
        self._size = queue_size
        self._arrived = asyncio.Event()  # set when a group is queued (or ``stop`` is called)
        self._room = asyncio.Event()  # set when groups are taken, for callers waiting on a full queue
        self._stopping = False
        self.commits = 0  # transactions committed, for metrics and the benchmark
        self._committing: set[asyncio.Task[None]] = set()  # until each has answered its pushes
        self._in_journal = 0  # batches handed to the journal and not committed yet

    @property
    def in_flight(self) -> int:
        """Batches handed to the journal and not committed yet (at most ``_IN_FLIGHT``)."""
        return self._in_journal

    @property
    def queued(self) -> int:
        """Groups of rows waiting for a place in the journal."""
        return len(self._waiting)

    async def write(self, rows: Sequence[Row]) -> list[int]:
        """Return once ``rows`` are committed, with the ids given to their ``deliveries`` rows without one
        (in order); raise the database error if their transaction failed."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

        def done(ids: list[int] | None, error: BaseException | None) -> None:
            if future.done():  # the caller was cancelled meanwhile
                return
            if error is None:
                future.set_result(ids or [])
            else:
                future.set_exception(error)

        while not self.submit(rows, done):  # the queue is full: wait for room
            self._room.clear()
            await self._room.wait()
        return await future

    def submit(self, rows: Sequence[Row], done: Done) -> bool:
        """Queue ``rows`` without waiting; ``done`` is called once they are committed (with their new
        deliveries' ids) or refused. False when the queue is full: the caller waits (``write``) instead of
        memory growing.

        A callback, not a future: the push path goes on in the commit's turn of the event loop. Through
        a future, and the publisher's after it, each push took two turns more, and a Handle each."""
        if len(self._waiting) >= self._size:
            return False
        self._waiting.append((rows, done))
        self._arrived.set()
        return True

    async def run(self) -> None:
        """Commit batches until ``stop`` is called; what was queued before the stop is still written.

        Up to ``_IN_FLIGHT`` batches are handed to the journal at once: while one commits, the next is
        already there to follow it, instead of the journal idling while the loop answers and routes the
        pushes just committed, and the loop idling while the journal commits."""
        room = asyncio.Semaphore(_IN_FLIGHT)
        committing = self._committing
        waiting = self._waiting
        try:
            while True:
                await room.acquire()
                while not waiting:
                    if self._stopping:
                        return
                    self._arrived.clear()
                    await self._arrived.wait()
                # With the other slot free too, half of what waits: the other half follows at once, and
                # its pushes are answered while the first half is routed (else one batch takes all, and
                # the loop and the journal take turns idling).
                size = _MAX_BATCH if self._in_journal else (len(waiting) + 1) // 2
                batch = [waiting.popleft() for _ in range(min(size, _MAX_BATCH, len(waiting)))]
                self._room.set()
                self._in_journal += 1
                # Handed over now, not when the Task first runs: a turn later, after the pushes of the
                # batch that just committed are routed, the journal would idle meanwhile.
                try:
                    answer = self._journal.start(functools.partial(_insert_groups, [r for r, _ in batch]))
                except Exception:  # rows that do not pickle: the Task meets it and writes group by group
                    answer = None
                task = asyncio.create_task(self._commit(batch, room, answer), name="group-commit")
                committing.add(task)
                task.add_done_callback(committing.discard)
        finally:
            if committing:
                await asyncio.gather(*committing)

    async def stop(self) -> None:
        self._stopping = True
        self._arrived.set()

    async def _commit(
        self, batch: list[_Item], room: asyncio.Semaphore, answer: asyncio.Future[list[list[int]]] | None
    ) -> None:
        """Write ``batch``, give its place in the journal back, then answer its pushes.

        The place is given back first, and the pushes answered one event-loop turn later: the writer so
        hands the journal its next batch before this one's pushes are routed (a millisecond of the loop's
        time for a large batch), instead of the journal idling meanwhile."""
        try:
            numbered = await self._write(batch, answer)
        finally:
            self._in_journal -= 1
            room.release()
        await asyncio.sleep(0)
        for (_, done), ids in zip(batch, numbered, strict=True):
            try:
                if ids is None:
                    done(None, _refused())
                else:
                    done(ids, None)
            except Exception:  # one caller's error must not keep the others unanswered
                log.exception("answering a committed write failed")

    async def _write(
        self, batch: list[_Item], answer: asyncio.Future[list[list[int]]] | None = None
    ) -> list[list[int] | None]:
        """Commit the batch (``answer``: the journal's, when it was handed over already); returns, per
        group, the ids its new deliveries were given, or ``None`` for a group not written."""
        try:
            numbered: list[list[int] | None] = list(
                await self._transaction([rows for rows, _ in batch], answer)
            )
        except Exception as exc:
            # A database that refuses writes (locked past the busy timeout, disk full, server gone) refuses
            # every group alike: the batch fails at once, not once more per group after another wait.
            if len(batch) == 1 or isinstance(exc, OperationalError):
                log.exception("write failed")
                return [None] * len(batch)
            # One bad group must not fail its neighbours: write them one by one.
            numbered = []
            for item in batch:
                numbered += await self._write([item])
        return numbered

    async def _transaction(
        self, groups: list[Sequence[Row]], answer: asyncio.Future[list[list[int]]] | None = None
    ) -> list[list[int]]:
        if answer is None:
            numbered = await self._journal.run(functools.partial(_insert_groups, groups))
        else:
            numbered = await answer
        self.commits += 1
        return numbered


def _refused() -> Unavailable:
    return Unavailable("the message could not be stored (the database refused the write); send it again")


def _insert_groups(groups: list[Sequence[Row]], connection: Connection) -> list[list[int]]:
    """Insert the groups' rows with one bulk INSERT per ``Columns`` (``gateway.storage.bulk``). Tables are
    inserted in the order they first appear in a group, so a group lists parents first. Returns the ids
    given to each group's deliveries that had none, in order (callers make jobs of them)."""
    batches: dict[Columns, list[tuple[Any, ...]]] = {}
    for rows in groups:
        for shape, values in rows:
            batch = batches.get(shape)
            if batch is None:
                batch = batches[shape] = []
            batch.append(values)
    given: dict[Columns, Any] = {}  # per numbered shape: an iterator over the ids its rows were given
    written = False
    for shape, batch in batches.items():
        table = Base.metadata.tables[shape.table]
        if table is _DELIVERIES and "id" not in shape.names:
            given[shape] = iter(_insert_deliveries(connection, shape.names, batch, written=written))
        else:
            insert_values(connection, table, shape.names, batch)
        written = True
    if not given:
        return [[] for _ in groups]
    return [[next(given[shape]) for shape, _ in rows if shape in given] for rows in groups]


def _insert_deliveries(
    connection: Connection, names: tuple[str, ...], batch: list[tuple[Any, ...]], *, written: bool
) -> list[int]:
    first = reserve_delivery_ids(connection) if written else None
    if first is not None:
        ids = list(range(first, first + len(batch)))
        insert_values(
            connection, _DELIVERIES, (*names, "id"), [(*row, n) for row, n in zip(batch, ids, strict=True)]
        )
        return ids
    rows = [dict(zip(names, row, strict=True)) for row in batch]
    stored = connection.scalars(
        insert(_DELIVERIES).returning(_DELIVERIES.c.id, sort_by_parameter_order=True), rows
    )
    return list(stored.all())


def orm_row(obj: Base) -> Row:
    """A new ORM object as a ``Row``: the column values set on it (unset ones get their defaults)."""
    state = inspect(obj)
    names = [attr.key for attr in state.mapper.column_attrs if attr.key in state.dict]
    return columns(obj.__table__.name, names), tuple(state.dict[name] for name in names)
