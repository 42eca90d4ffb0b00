"""``Journal``: a write transaction is one function of a connection, committed when it returns, rolled back
when it raises; on a SQLite file it runs in the journal process with the storage settings applied, and a
journal process that ends fails only the transactions it had not answered."""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
import signal
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from gateway.config import StorageConfig
from gateway.helper_process import Unsettled
from gateway.storage import database
from gateway.storage.journal import Journal, _Transactions
from gateway.storage.models import Topic
from tests.process import running

_TOPICS = Topic.__table__


# Transactions cross into the journal process pickled, so they are module-level functions.
def add_topic(name: str, connection: Connection) -> tuple[int, int, str, int]:
    connection.execute(insert(_TOPICS).values(id=name, name=name))
    synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar_one()
    mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar_one()
    temporaries = connection.exec_driver_sql("PRAGMA temp_store").scalar_one()
    return os.getpid(), synchronous, mode, temporaries


def add_two_topics_of_one_name(connection: Connection) -> None:
    connection.execute(insert(_TOPICS).values(id="garage", name="garage"))
    connection.execute(insert(_TOPICS).values(id="garage2", name="kitchen"))  # the name is taken


def add_topic_and_hang(name: str, begun: str, connection: Connection) -> None:
    """Insert, say so by creating the file ``begun``, then never commit."""
    connection.execute(insert(_TOPICS).values(id=name, name=name))
    Path(begun).touch()
    threading.Event().wait()


def add_topic_once(name: str, release: str, connection: Connection) -> None:
    """Insert, then wait (10 s at most) for the file ``release`` before committing."""
    connection.execute(insert(_TOPICS).values(id=name, name=name))
    deadline = time.monotonic() + 10
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


async def _names(engine) -> list[str]:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:  # what the async engine's sessions see
        return list((await conn.scalars(select(Topic.name).order_by(Topic.name))).all())


async def test_commits_rolls_back_and_keeps_serving_in_its_own_process(tmp_path: Path) -> None:
    config = StorageConfig(data_dir=str(tmp_path), sqlite_synchronous="NORMAL")
    engine = database.create_engine(config)
    await database.upgrade(engine)
    journal = Journal(engine, config)
    try:
        pid, synchronous, mode, temporaries = await journal.run(functools.partial(add_topic, "kitchen"))
        assert pid == journal.pid and pid != os.getpid()  # the gateway's process never runs SQLite here
        assert (synchronous, mode) == (1, "wal")  # NORMAL, as configured; WAL like every connection
        assert temporaries == 2  # MEMORY: no temporary file per transaction

        with pytest.raises(IntegrityError):  # the error itself, as the caller would get it in process
            await journal.run(add_two_topics_of_one_name)
        await journal.run(functools.partial(add_topic, "porch"))  # nothing left behind, not even the lock

        assert await _names(engine) == ["kitchen", "porch"]
    finally:
        await journal.close()
        await engine.dispose()
    assert not running(pid)  # closing ends the process


async def test_a_killed_journal_process_fails_what_it_had_not_answered_and_a_new_one_serves(
    tmp_path: Path,
) -> None:
    config = StorageConfig(data_dir=str(tmp_path))
    engine = database.create_engine(config)
    await database.upgrade(engine)
    journal = Journal(engine, config)
    try:
        first, *_ = await journal.run(functools.partial(add_topic, "kitchen"))
        begun = tmp_path / "begun"
        hung = asyncio.ensure_future(journal.run(functools.partial(add_topic_and_hang, "attic", str(begun))))
        queued = asyncio.ensure_future(journal.run(functools.partial(add_topic, "cellar")))
        async with asyncio.timeout(10):
            while not begun.exists():  # the file system is the only way out of the hung transaction
                await asyncio.sleep(0.01)
        os.kill(first, signal.SIGKILL)
        for lost in (hung, queued):
            with pytest.raises(OperationalError, match="journal process ended"):
                await asyncio.wait_for(lost, 10)
        second, *_ = await journal.run(functools.partial(add_topic, "porch"))
        assert second != first
        assert await _names(engine) == ["kitchen", "porch"]  # the killed transaction rolled back
    finally:
        await journal.close()
        await engine.dispose()


async def test_an_exclusive_section_waits_for_the_journal_and_holds_it_off(tmp_path: Path) -> None:
    """What the outbox relies on to write through the async sessions beside the journal: the section
    begins once the transactions handed over are committed, and one handed over meanwhile runs after it."""
    config = StorageConfig(data_dir=str(tmp_path), sqlite_busy_timeout=0.1)
    engine = database.create_engine(config)
    await database.upgrade(engine)
    journal = Journal(engine, config)
    release = tmp_path / "release"
    events: list[str] = []
    try:
        first = asyncio.ensure_future(journal.run(functools.partial(add_topic_once, "kitchen", str(release))))

        async def section() -> None:
            async with journal.exclusive():
                committed = await _names(engine)
                events.append("section begun after kitchen" if committed == ["kitchen"] else "section begun")
                later = asyncio.ensure_future(journal.run(functools.partial(add_topic, "cellar")))
                later.add_done_callback(lambda _: events.append("cellar committed"))
                async with engine.begin() as conn:  # with a 0.1 s busy timeout: the lock must be free
                    await conn.execute(insert(_TOPICS).values(id="porch", name="porch"))
                events.append("section ends")
            await later

        running_section = asyncio.ensure_future(section())
        for _ in range(20):
            await asyncio.sleep(0)  # let the section try to begin while ``first`` is in the journal
        assert events == []
        release.touch()
        await asyncio.wait_for(asyncio.gather(first, running_section), 10)
        assert events == ["section begun after kitchen", "section ends", "cellar committed"]
        async with engine.connect() as conn:
            order = (await conn.scalars(text("SELECT name FROM topics ORDER BY rowid"))).all()
        assert order == ["kitchen", "porch", "cellar"]
    finally:
        await journal.close()
        await engine.dispose()


async def test_other_databases_run_the_same_function_through_the_async_engine() -> None:
    config = StorageConfig(database_url="sqlite+aiosqlite:///:memory:")
    assert not database.has_own_file(config)  # a second connection would not see it
    engine = database.create_engine(config)
    journal = Journal(engine)
    try:

        def fill(connection: Connection) -> int:  # run in this process: no pickling
            connection.execute(text("CREATE TABLE t (n INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (1), (2)"))
            return int(connection.execute(text("SELECT sum(n) FROM t")).scalar_one())

        assert await journal.run(fill) == 3
        assert journal.pid is None
    finally:
        await journal.close()
        await engine.dispose()


@pytest.mark.parametrize(("level", "synced_here"), [("FULL", True), ("EXTRA", True), ("NORMAL", False)])
def test_at_full_the_log_is_synced_by_the_journal_not_inside_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: str, synced_here: bool
) -> None:
    """The journal process's side, run here: at FULL its commits are NORMAL and ``settle`` (called before
    the answers go out, ``tests/test_helper_process.py``) syncs the database's write-ahead log. A
    transaction handed over with ``durable=False`` is answered ``Unsettled``: sent without a settle."""
    config = StorageConfig(data_dir=str(tmp_path), sqlite_synchronous=level)
    asyncio.run(_migrated(config))
    synced: list[str] = []
    fdatasync = os.fdatasync

    def recorded(fd: int) -> None:  # the OS call, recorded; SQLite's own syncs do not come through here
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", recorded)
    transactions = _Transactions()
    assert pickle.loads(transactions.answer(pickle.dumps(config))) == (True, None)
    answered = transactions.answer(pickle.dumps((True, functools.partial(add_topic, "kitchen"))))
    assert not isinstance(answered, Unsettled)  # sent only after a settle
    committed, (_, synchronous, mode, _) = pickle.loads(answered)
    assert committed and (synchronous, mode) == (1, "wal")  # the commit itself wrote the log, unsynced
    assert synced == []
    transactions.settle()
    log = os.path.realpath(tmp_path / "pushgate.db-wal")
    assert synced == ([log] if synced_here else [])

    answered = transactions.answer(pickle.dumps((False, functools.partial(add_topic, "cellar"))))
    assert isinstance(answered, Unsettled)  # sent as soon as the answers before it
    assert pickle.loads(answered)[0]


async def _migrated(config: StorageConfig) -> None:
    engine = database.create_engine(config)
    await database.upgrade(engine)
    await engine.dispose()
