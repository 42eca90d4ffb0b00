"""``Journal``: a write transaction is one function of a connection, committed when it returns, rolled back
when it raises, on a SQLite file in the journal's own thread with the storage settings applied."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import IntegrityError

from gateway.config import StorageConfig
from gateway.storage import database
from gateway.storage.journal import Journal
from gateway.storage.models import Topic

_TOPICS = Topic.__table__


async def test_commits_rolls_back_and_keeps_serving_on_its_own_thread(tmp_path: Path) -> None:
    config = StorageConfig(data_dir=str(tmp_path), sqlite_synchronous="NORMAL")
    engine = database.create_engine(config)
    await database.upgrade(engine)
    journal = Journal(engine, database.create_journal_engine(config))
    loop_thread = threading.get_ident()
    try:

        def add(name: str) -> tuple[int, int, str]:
            def work(connection: Connection) -> tuple[int, int, str]:
                connection.execute(insert(_TOPICS).values(id=name, name=name))
                synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar_one()
                mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar_one()
                return threading.get_ident(), synchronous, mode

            return work

        thread, synchronous, mode = await journal.run(add("kitchen"))
        assert thread != loop_thread  # the loop's thread never waits on SQLite
        assert (synchronous, mode) == (1, "wal")  # NORMAL, as configured; WAL like every connection

        def add_twice(connection: Connection) -> None:
            connection.execute(insert(_TOPICS).values(id="garage", name="garage"))
            connection.execute(insert(_TOPICS).values(id="garage2", name="kitchen"))  # the name is taken

        with pytest.raises(IntegrityError):
            await journal.run(add_twice)
        await journal.run(add("porch"))  # the failed transaction left nothing behind, not even its lock

        async with engine.connect() as conn:  # what the async engine's sessions see
            names = (await conn.scalars(select(Topic.name).order_by(Topic.name))).all()
        assert names == ["kitchen", "porch"]
    finally:
        await journal.close()
        await engine.dispose()


async def test_other_databases_run_the_same_function_through_the_async_engine() -> None:
    config = StorageConfig(database_url="sqlite+aiosqlite:///:memory:")
    assert database.create_journal_engine(config) is None  # a second connection would not see it
    engine = database.create_engine(config)
    journal = Journal(engine)
    try:

        def fill(connection: Connection) -> int:
            connection.execute(text("CREATE TABLE t (n INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (1), (2)"))
            return int(connection.execute(text("SELECT sum(n) FROM t")).scalar_one())

        assert await journal.run(fill) == 3
    finally:
        await journal.close()
        await engine.dispose()
