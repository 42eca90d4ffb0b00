"""Write transactions as one hand-off each: the push path's inserts and the outbox's outcomes.

A transaction is a function of a synchronous SQLAlchemy ``Connection``. On a SQLite file it runs whole in
the journal process (``python -m gateway.storage.journal``, a ``gateway.helper_process``), with its own
connection to the same file: one frame there and one back, however many statements it holds.

Why a process and not a thread: the statements' Python (SQLAlchemy, binding the parameters) holds the GIL,
so a journal thread and the event loop's thread took turns on one core. Under push load the two together
were the whole core (the loop at 55–65%, the journal at 40–45%) while the machine's second core idled; in
its own process the journal's Python runs beside the loop. Before the thread, every statement was a round
trip to aiosqlite's thread that waited for the busy loop to come around (10–25 ms per three-statement
transaction).

The transaction therefore crosses a process boundary: it is pickled, so it is a module-level function
(or a ``functools.partial`` of one, or a method of a picklable object) with plain data; its result and
its error come back pickled. Other databases (and SQLite in memory, which a second connection would not
see) run the same function through the async engine's ``run_sync``.

If the process ends (killed, out of memory), the transactions it had not answered fail with an
``OperationalError``: they may or may not have committed, so their callers answer "send again" (at least
once), and the next transaction starts a new process.

Only the two busiest writers use it (``gateway.writer``, ``gateway.outbox``), and they do not wait for
each other: the process runs what it is handed in order, so the writer's next batch is already there when
the recorder's outcomes commit, and the other way round. A write through the async sessions that must
not find SQLite's write lock taken (the outbox's, beside a receipt hook) holds the journal off with
``exclusive``; a transaction that finds the lock taken polls for it in sleeps of milliseconds (the busy
timeout). Other writes go through the async sessions and that busy timeout.

At ``synchronous = FULL`` a transaction is answered once its commit is on disk (``_Transactions``). One
handed over with ``durable=False`` is answered at its commit, without waiting for the sync: the
recorder's outcomes, which only tell what the durable rows (a flagged receipt, a pending delivery) would
have the outbox send again. Were one lost with the machine's power, its deliveries would go out twice,
not be lost; the next durable commit's sync covers it in any case (the log is synced as a whole). Its
answer so no longer waits up to two syncs, and the writer's next answer finds no sync of its running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import helper_process
from gateway.config import StorageConfig

__all__ = ["Journal", "Transaction"]

log = logging.getLogger(__name__)

T = TypeVar("T")
# A write transaction: statements on a connection whose transaction the journal begins and commits.
Transaction = Callable[[Connection], T]

_CLOSE_WAIT = 10.0  # seconds beyond the busy timeout the process has to finish and end once told to


class Journal:
    def __init__(self, engine: AsyncEngine, storage: StorageConfig | None = None) -> None:
        """``storage``: the settings of a SQLite file (``database.has_own_file``), whose transactions run
        in the journal process; without it they run through ``engine``."""
        self._engine = engine
        self._storage = storage
        self._process: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()  # answers to come, in the order asked
        self._one_at_a_time = asyncio.Lock()  # without the process: one transaction of the engine at a time
        self._sections = asyncio.Lock()  # one ``exclusive`` section at a time
        self._open = asyncio.Event()  # no ``exclusive`` section holds transactions off
        self._open.set()
        self._running = 0  # transactions handed over (or about to be) and not answered yet
        self._idle = asyncio.Event()  # ``_running`` is 0
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the running loop, once known (``start``)
        self.handed_over = 0  # transactions written to the process so far, for metrics and tests

    @property
    def pid(self) -> int | None:
        """The journal process's id while it runs."""
        return None if self._process is None else self._process.pid

    async def run(self, work: Transaction[T], *, durable: bool = True) -> T:
        """Run ``work`` in one transaction, committed when it returns, rolled back when it raises (the
        error is raised here). ``durable=False``: answered at the commit, not once it is on disk (see the
        module's docstring)."""
        while (answer := self.start(work, durable=durable)) is None:
            if not self._open.is_set():
                await self._open.wait()
            elif self._storage is None:
                return await self._run_here(work)
            else:
                answer = await self._started(work, durable)
                break
        return await answer

    def start(self, work: Transaction[T], *, durable: bool = True) -> asyncio.Future[T] | None:
        """Hand ``work`` over now, in the caller's turn of the event loop, and return its answer to come
        (``run`` then awaits it). ``None`` when that cannot be done at once: no process yet, an
        ``exclusive`` section holding transactions off, or a database without the process; ``run``
        waits for what it needs. The group-commit writer hands a batch over this way the moment it has
        taken it, not a turn later in the Task that awaits the answer."""
        process = self._process
        if process is None or not self._open.is_set():
            return None
        self._count()
        return self._hand_over(process, work, durable)

    async def _started(self, work: Transaction[T], durable: bool) -> asyncio.Future[T]:
        """``start`` once the process runs: counted at once, so an ``exclusive`` section begun while the
        process starts waits for it."""
        self._count()
        try:
            process = await self._start()
        except BaseException:
            self._answered()
            raise
        return self._hand_over(process, work, durable)

    def _count(self) -> None:
        self._running += 1
        self._idle.clear()

    def _hand_over(
        self, process: asyncio.subprocess.Process, work: Transaction[T], durable: bool
    ) -> asyncio.Future[T]:
        """Write ``work`` to the process (counted already); its answer comes in order (``_read``)."""
        assert process.stdin is not None
        try:
            data = helper_process.frame(pickle.dumps((durable, work), pickle.HIGHEST_PROTOCOL))
        except BaseException:
            self._answered()
            raise
        if self._loop is None:  # kept: ``get_running_loop`` is a getpid() system call on Python 3.11
            self._loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = self._loop.create_future()
        self._waiting.append(answer)  # counted until its answer comes, even if its caller is cancelled
        process.stdin.write(data)
        self.handed_over += 1
        return answer

    def _answered(self) -> None:
        self._running -= 1
        if not self._running:
            self._idle.set()

    async def _run_here(self, work: Transaction[T]) -> T:
        """Without the process: through the async engine, one transaction at a time."""
        self._count()
        try:
            async with self._one_at_a_time, self._engine.begin() as connection:
                return await connection.run_sync(work)
        finally:
            self._answered()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """No journal transaction runs inside: the ones handed over are answered first, and new ones wait
        until the section ends."""
        async with self._sections:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()

    async def _start(self) -> asyncio.subprocess.Process:
        async with self._starting:
            if self._process is None:
                process = await helper_process.start(__name__)
                assert process.stdin is not None
                self._count()  # the settings' answer, counted as every answer to come
                self._waiting.append(asyncio.get_running_loop().create_future())
                process.stdin.write(helper_process.frame(pickle.dumps(self._storage)))
                self._process = process
                self._reader = asyncio.create_task(self._read(process), name="journal-reader")
            return self._process

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while True:
                committed, value = pickle.loads(await helper_process.read_frame(process.stdout))
                future = self._waiting.popleft()
                self._answered()
                if future.done():  # the caller was cancelled meanwhile; what committed stays committed
                    continue
                if committed:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if self._waiting or process.returncode not in (None, 0):
                log.warning("the storage journal process ended (%s)", exc)
        finally:
            if self._process is process:
                self._process = None
            lost = OperationalError(
                "(the storage journal process)", None, ConnectionError("the journal process ended")
            )
            while self._waiting:
                future = self._waiting.popleft()
                self._answered()
                if not future.done():
                    future.set_exception(lost)
            await helper_process.stop(process, _CLOSE_WAIT)

    async def close(self) -> None:
        """Finish what was handed over, then end the process."""
        async with self._starting:
            process, reader = self._process, self._reader
            if process is not None and reader is not None:
                assert self._storage is not None
                await helper_process.stop(process, self._storage.sqlite_busy_timeout + _CLOSE_WAIT)
                await reader


class _Transactions:
    """The journal process's side: the first frame is the ``StorageConfig``, each one after it a pickled
    ``(durable, transaction)``, answered with ``(True, result)`` or ``(False, error)`` (``Unsettled`` when
    not ``durable``).

    ``synchronous = FULL`` (or EXTRA) is kept by syncing the log here rather than in SQLite's commit: the
    connection commits at NORMAL (the log written, not synced), and ``settle`` syncs the log before the
    answers go out (``helper_process.serve``). A commit is so answered only once it is on disk, as FULL
    promises, but the process runs the next transaction while the disk syncs, and one sync covers every
    commit made during the one before: under push load the process waited on the disk a fifth of the
    time. SQLite itself still syncs around its checkpoints, as at NORMAL."""

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._log: str | None = None  # the write-ahead log's path, when commits are synced here

    def answer(self, data: bytes) -> bytes:
        if self._engine is None:
            self._open(pickle.loads(data))
            return pickle.dumps((True, None))
        durable = True  # what cannot be read is answered as a durable transaction would be
        try:
            durable, work = pickle.loads(data)
            with self._engine.begin() as connection:
                answer: tuple[bool, Any] = (True, work(connection))
        except Exception as exc:  # handed to the caller, whatever it is
            answer = (False, exc)
        try:
            answered = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
        except Exception:  # an error (or result) that does not pickle: its text, as an error
            answered = pickle.dumps((False, RuntimeError(repr(answer[1]))))
        return answered if durable else helper_process.Unsettled(answered)

    def _open(self, storage: StorageConfig) -> None:
        from gateway.storage.database import create_journal_engine

        synced_here = storage.sqlite_synchronous.upper() in _SYNCED_PER_COMMIT
        if synced_here:
            storage = dataclasses.replace(storage, sqlite_synchronous="NORMAL")
        self._engine = create_journal_engine(storage)
        assert self._engine is not None, "the journal process is for SQLite files"
        if synced_here:
            with self._engine.connect() as connection:
                files = connection.exec_driver_sql("PRAGMA database_list").all()
            self._log = next(file for _, name, file in files if name == "main") + "-wal"

    def settle(self) -> None:
        """Make every commit answered so far durable: sync the write-ahead log to disk. The file is opened by
        name each time, so a log SQLite deleted and made anew is never missed; one that is not there has
        been checkpointed into the database file, which SQLite synced."""
        if self._log is None:
            return
        try:
            fd = os.open(self._log, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fdatasync(fd)  # as SQLite syncs its log on Linux: the data and the file's size
        finally:
            os.close(fd)


# The levels at which SQLite syncs the write-ahead log at every commit (in WAL mode EXTRA is FULL).
_SYNCED_PER_COMMIT = frozenset({"FULL", "EXTRA"})


if __name__ == "__main__":
    transactions = _Transactions()
    helper_process.serve(transactions.answer, settle=transactions.settle)
