"""Group commit: concurrent publishes share one transaction and one fsync.

Each caller hands its rows to ``write`` and is resumed only after the commit that contains them, so an
edge answers (HTTP 200, MQTT PUBACK) only for data that is on disk. The queue is bounded: when the disk
falls behind, callers wait instead of memory growing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, inspect
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.storage.models import Base, Delivery
from gateway.storage.numbering import reserve_delivery_ids

__all__ = ["GroupCommitWriter"]

log = logging.getLogger(__name__)

_MAX_BATCH = 500  # rows groups per transaction; bounds the transaction's size and latency
_Item = tuple[Sequence[Base], asyncio.Future[None]]


class GroupCommitWriter:
    def __init__(self, sessions: async_sessionmaker[Any], queue_size: int) -> None:
        self._sessions = sessions
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=queue_size)
        self.commits = 0  # transactions committed, for metrics and the benchmark

    async def write(self, rows: Sequence[Base]) -> None:
        """Return once ``rows`` are committed; raise the database error if their transaction failed."""
        future = self.submit(rows)
        if future is None:  # the queue is full: wait for room
            future = asyncio.get_running_loop().create_future()
            await self._queue.put((rows, future))
        await future

    def submit(self, rows: Sequence[Base]) -> asyncio.Future[None] | None:
        """Queue ``rows`` without waiting; the future settles as ``write`` returns. ``None`` when the queue
        is full, so the caller waits (``write``) instead of memory growing."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((rows, future))
        except asyncio.QueueFull:
            return None
        return future

    async def run(self) -> None:
        """Commit batches until ``stop`` is called; what was queued before the stop is still written."""
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < _MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._commit(batch)
            if stopping:
                return

    async def stop(self) -> None:
        await self._queue.put(None)

    async def _commit(self, batch: list[_Item]) -> None:
        try:
            await self._transaction([rows for rows, _ in batch])
        except Exception:
            if len(batch) == 1:
                log.exception("write failed")
                self._settle(batch[0][1], error=True)
                return
            # One bad group must not fail its neighbours: write them one by one.
            for item in batch:
                await self._commit([item])
            return
        for _, future in batch:
            self._settle(future)

    async def _transaction(self, groups: list[Sequence[Base]]) -> None:
        """Insert the groups' rows with one executemany statement per table (and set of columns given),
        not through the ORM's unit of work, which costs more than the rest of a push together. Tables
        are inserted in the order they first appear in a group, so a group lists parents first."""
        tables: dict[tuple[type[Base], frozenset[str]], list[tuple[Base, dict[str, Any]]]] = {}
        for rows in groups:
            for row in rows:
                values = _column_values(row)
                tables.setdefault((type(row), frozenset(values)), []).append((row, values))
        async with self._sessions() as session:
            written = False
            for (model, _), batch in tables.items():
                if model is Delivery and any(values.get("id") is None for _, values in batch):
                    await self._insert_deliveries(session, batch, written=written)
                else:
                    await session.execute(insert(model), [values for _, values in batch])
                written = True
            await session.commit()
        self.commits += 1

    @staticmethod
    async def _insert_deliveries(
        session: Any, batch: list[tuple[Base, dict[str, Any]]], *, written: bool
    ) -> None:
        """Insert deliveries without ids and give the row objects theirs (callers turn them into jobs)."""
        first = await reserve_delivery_ids(session, len(batch)) if written else None
        if first is not None:
            for number, (row, values) in enumerate(batch, first):
                values["id"] = row.id = number  # type: ignore[attr-defined]
            await session.execute(insert(Delivery), [values for _, values in batch])
            return
        ids = await session.scalars(
            insert(Delivery).returning(Delivery.id, sort_by_parameter_order=True),
            [values for _, values in batch],
        )
        for (row, _), number in zip(batch, ids.all(), strict=True):
            row.id = number  # type: ignore[attr-defined]

    @staticmethod
    def _settle(future: asyncio.Future[None], *, error: bool = False) -> None:
        if future.done():
            return
        if error:
            future.set_exception(RuntimeError("the message could not be stored; see the server log"))
        else:
            future.set_result(None)


def _column_values(row: Base) -> dict[str, Any]:
    """The column values set on a new row object; columns left unset get their defaults in the INSERT."""
    state = inspect(row)
    return {attr.key: state.dict[attr.key] for attr in state.mapper.column_attrs if attr.key in state.dict}
