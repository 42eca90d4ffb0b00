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

from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.storage.models import Base
from gateway.storage.numbering import number_new_deliveries

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
        async with self._sessions() as session:
            for rows in groups:
                session.add_all(rows)
            await number_new_deliveries(session)
            await session.commit()
            # The rows are handed back to their callers; detach them from the closed session.
            session.expunge_all()
        self.commits += 1

    @staticmethod
    def _settle(future: asyncio.Future[None], *, error: bool = False) -> None:
        if future.done():
            return
        if error:
            future.set_exception(RuntimeError("the message could not be stored; see the server log"))
        else:
            future.set_result(None)
