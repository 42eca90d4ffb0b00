"""Group commit: concurrent publishes share one transaction and one fsync.

Each caller hands its rows to ``write`` and is resumed only after the commit that contains them, so an
edge answers (HTTP 200, MQTT PUBACK) only for data that is on disk. The queue is bounded: when the disk
falls behind, callers wait instead of memory growing.

A row is a table's name and a dict of column values (``Row``), not an ORM object: building, instrumenting and
inspecting three ORM objects per push cost more than their INSERTs. ``orm_row`` turns an ORM object
into one for the rare caller that has one. A batch's transaction is one function handed to the journal
(``gateway.storage.journal``), so its statements do not each wait for the event loop; it goes to the
journal process pickled (hence tables by name), and comes back with the delivery ids it gave.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert, inspect
from sqlalchemy.exc import OperationalError

from gateway.errors import Unavailable
from gateway.storage.bulk import insert_rows
from gateway.storage.journal import Journal
from gateway.storage.models import Base, Delivery
from gateway.storage.numbering import reserve_delivery_ids

__all__ = ["Done", "GroupCommitWriter", "Row", "orm_row"]

log = logging.getLogger(__name__)

# A row to insert: its table's name and the column values set (columns left out get their defaults). A
# ``deliveries`` row without an ``id`` gets one written into its dict by the commit.
Row = tuple[str, dict[str, Any]]

_MAX_BATCH = 500  # rows groups per transaction; bounds the transaction's size and latency
_IN_FLIGHT = 2  # transactions handed to the journal at once (``GroupCommitWriter.run``)
# Told once what became of a group of rows: ``None`` once committed, else the error to answer with.
Done = Callable[[BaseException | None], None]
_Item = tuple[Sequence[Row], Done]
_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
_DELIVERIES_NAME = _DELIVERIES.name


class GroupCommitWriter:
    def __init__(self, journal: Journal, queue_size: int) -> None:
        self._journal = journal
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=queue_size)
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
        return self._queue.qsize()

    async def write(self, rows: Sequence[Row]) -> None:
        """Return once ``rows`` are committed; raise the database error if their transaction failed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(error: BaseException | None) -> None:
            if future.done():  # the caller was cancelled meanwhile
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        if not self.submit(rows, done):  # the queue is full: wait for room
            await self._queue.put((rows, done))
        await future

    def submit(self, rows: Sequence[Row], done: Done) -> bool:
        """Queue ``rows`` without waiting; ``done`` is called once they are committed (or refused). False
        when the queue is full: the caller waits (``write``) instead of memory growing.

        A callback, not a future: the push path goes on in the commit's turn of the event loop. Through
        a future, and the publisher's after it, each push took two turns more, and a Handle each."""
        try:
            self._queue.put_nowait((rows, done))
        except asyncio.QueueFull:
            return False
        return True

    async def run(self) -> None:
        """Commit batches until ``stop`` is called; what was queued before the stop is still written.

        Up to ``_IN_FLIGHT`` batches are handed to the journal at once: while one commits, the next is
        already there to follow it, instead of the journal idling while the loop answers and routes the
        pushes just committed, and the loop idling while the journal commits."""
        room = asyncio.Semaphore(_IN_FLIGHT)
        committing = self._committing
        try:
            stopping = False
            while not stopping:
                await room.acquire()
                first = await self._queue.get()
                if first is None:
                    return
                batch = [first]
                # With the other slot free too, half of what waits: the other half follows at once, and
                # its pushes are answered while the first half is routed (else one batch takes all, and
                # the loop and the journal take turns idling).
                size = _MAX_BATCH if self._in_journal else min(_MAX_BATCH, (self._queue.qsize() + 2) // 2)
                while len(batch) < size and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
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
        await self._queue.put(None)

    async def _commit(
        self, batch: list[_Item], room: asyncio.Semaphore, answer: asyncio.Future[list[list[int]]] | None
    ) -> None:
        """Write ``batch``, give its place in the journal back, then answer its pushes.

        The place is given back first, and the pushes answered one event-loop turn later: the writer so
        hands the journal its next batch before this one's pushes are routed (a millisecond of the loop's
        time for a large batch), instead of the journal idling meanwhile."""
        try:
            failed = await self._write(batch, answer)
        finally:
            self._in_journal -= 1
            room.release()
        await asyncio.sleep(0)
        for _, done in batch:
            try:
                done(_refused() if done in failed else None)
            except Exception:  # one caller's error must not keep the others unanswered
                log.exception("answering a committed write failed")

    async def _write(
        self, batch: list[_Item], answer: asyncio.Future[list[list[int]]] | None = None
    ) -> set[Done]:
        """Commit the batch (``answer``: the journal's, when it was handed over already); returns the
        callbacks (each group's own) of the groups not written."""
        try:
            await self._transaction([rows for rows, _ in batch], answer)
        except Exception as exc:
            # A database that refuses writes (locked past the busy timeout, disk full, server gone) refuses
            # every group alike: the batch fails at once, not once more per group after another wait.
            if len(batch) == 1 or isinstance(exc, OperationalError):
                log.exception("write failed")
                return {done for _, done in batch}
            # One bad group must not fail its neighbours: write them one by one.
            failed: set[Done] = set()
            for item in batch:
                failed |= await self._write([item])
            return failed
        return set()

    async def _transaction(
        self, groups: list[Sequence[Row]], answer: asyncio.Future[list[list[int]]] | None = None
    ) -> None:
        unnumbered = _unnumbered(groups)  # before: without the journal process, the commit numbers these
        if answer is None:
            numbered = await self._journal.run(functools.partial(_insert_groups, groups))
        else:
            numbered = await answer
        for fresh, ids in zip(unnumbered, numbered, strict=True):
            for values, number in zip(fresh, ids, strict=True):
                values["id"] = number
        self.commits += 1


def _refused() -> Unavailable:
    return Unavailable("the message could not be stored (the database refused the write); send it again")


def _insert_groups(groups: list[Sequence[Row]], connection: Connection) -> list[list[int]]:
    """Insert the groups' rows with one bulk INSERT per table and set of columns given
    (``gateway.storage.bulk``). Tables are inserted in the order they first appear in a group, so a group
    lists parents first. Returns the ids given to each group's deliveries that had none, in order (callers
    make jobs of them)."""
    unnumbered = _unnumbered(groups)
    batches: dict[tuple[str, frozenset[str]], list[dict[str, Any]]] = {}
    for rows in groups:
        for name, values in rows:
            batches.setdefault((name, frozenset(values)), []).append(values)
    written = False
    for (name, _), batch in batches.items():
        if name == _DELIVERIES_NAME and "id" not in batch[0]:
            _insert_deliveries(connection, batch, written=written)
        else:
            insert_rows(connection, Base.metadata.tables[name], batch)
        written = True
    return [[values["id"] for values in fresh] for fresh in unnumbered]


def _unnumbered(groups: Sequence[Sequence[Row]]) -> list[list[dict[str, Any]]]:
    """Each group's deliveries without an id, in order: the rows the commit numbers."""
    return [
        [values for name, values in rows if name == _DELIVERIES_NAME and "id" not in values]
        for rows in groups
    ]


def _insert_deliveries(connection: Connection, batch: list[dict[str, Any]], *, written: bool) -> None:
    first = reserve_delivery_ids(connection) if written else None
    if first is not None:
        for number, values in enumerate(batch, first):
            values["id"] = number
        insert_rows(connection, _DELIVERIES, batch)
        return
    ids = connection.scalars(
        insert(_DELIVERIES).returning(_DELIVERIES.c.id, sort_by_parameter_order=True), batch
    )
    for values, number in zip(batch, ids.all(), strict=True):
        values["id"] = number


def orm_row(obj: Base) -> Row:
    """A new ORM object as a ``Row``: the column values set on it (unset ones get their defaults)."""
    state = inspect(obj)
    values = {attr.key: state.dict[attr.key] for attr in state.mapper.column_attrs if attr.key in state.dict}
    return obj.__table__.name, values
