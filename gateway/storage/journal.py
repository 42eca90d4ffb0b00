"""Write transactions as one hand-off each: the push path's inserts and the outbox's outcomes.

A transaction is a plain function of a synchronous SQLAlchemy ``Connection``. On a SQLite file it runs
whole on the journal's own thread, with its own connection to the same file: one hand-off to the thread
and one back, however many statements it holds. Through aiosqlite every statement is a round trip to the
driver's thread that waits for the event loop to come around; under load the loop is busy parsing and
delivering, and a three-statement transaction took 10–25 ms, most of it waiting its turn, so the group
commit, not the CPU, set the push path's pace. Other databases (and SQLite in memory, which a second
connection would not see) run the same function through the async engine's ``run_sync``.

Only the two busiest writers use it (``gateway.writer``, ``gateway.outbox``); they take turns through the
core's write lock, so the journal's connection and aiosqlite's never wait for each other there. Other
writes go through the async sessions and SQLite's busy timeout as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Journal", "Transaction"]

T = TypeVar("T")
# A write transaction: statements on a connection whose transaction the journal begins and commits.
Transaction = Callable[[Connection], T]

_Item = tuple[Callable[[Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class Journal:
    def __init__(self, engine: AsyncEngine, own: Engine | None = None) -> None:
        """``own``: a synchronous engine on the same SQLite file for the journal's thread
        (``database.create_journal_engine``); without it the transactions run through ``engine``."""
        self._engine = engine
        self._own = own
        self._jobs: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, work: Transaction[T]) -> T:
        """Run ``work`` in one transaction, committed when it returns, rolled back when it raises (the
        error is raised here)."""
        if self._own is None:
            async with self._engine.begin() as connection:
                return await connection.run_sync(work)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="pushgate-journal", daemon=True)
            self._thread.start()
        self._jobs.put((work, future, loop))
        return await future

    async def close(self) -> None:
        """Finish what was handed over, then stop the thread and close its connection."""
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._own is not None:
            self._own.dispose()

    def _serve(self) -> None:
        assert self._own is not None
        while True:
            item = self._jobs.get()
            if item is None:
                return
            work, future, loop = item
            try:
                with self._own.begin() as connection:
                    result = work(connection)
            except BaseException as exc:  # handed to the caller, whatever it is
                _hand_back(loop, future, error=exc)
            else:
                _hand_back(loop, future, result=result)


def _hand_back(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], *, result: Any = None, error: Any = None
) -> None:
    def settle() -> None:
        if future.done():  # the caller was cancelled meanwhile; what committed stays committed
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        loop.call_soon_threadsafe(settle)
