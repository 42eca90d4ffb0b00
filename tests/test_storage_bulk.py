"""``insert_rows`` (multi-row INSERTs on SQLite, 512 rows a statement at most) stores exactly what
SQLAlchemy's own INSERT stores, in statements of a few sizes; ``in_lists`` for ``IN (...)``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import bindparam, create_engine, event, insert, select, text, update

from gateway.config import StorageConfig
from gateway.storage import database
from gateway.storage.bulk import ListedStatement, in_lists, insert_rows
from gateway.storage.models import Base, Delivery, Message, Topic

_MESSAGES = Message.__table__
_DELIVERIES = Delivery.__table__
_LIST_LENGTHS = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512}


async def test_rows_match_sqlalchemys_insert_across_chunk_sizes(tmp_path: Path) -> None:
    engine = database.create_engine(StorageConfig(data_dir=str(tmp_path)))
    try:
        await database.upgrade(engine)
        sessions = database.session_factory(engine)
        created = datetime(2026, 12, 7, 1, 2, 3, 4560, tzinfo=UTC)
        async with sessions() as session:
            session.add(Topic(id="t", name="bulk"))
            await session.flush()
            for way, count in (("bulk", 1), ("core", 1), ("bulk", 3), ("bulk", 1100), ("core", 1100)):
                messages = [
                    {
                        "id": f"{way}-{count}-{n:04d}",
                        "topic_id": "t",
                        "message": f"reading {n} ünïcode",
                        "tags": ["door", "alarm"] if n % 2 else [],
                        "actions": [{"id": "approve", "label": "Approve"}] if n % 3 == 0 else [],
                        "source": "mqtt",
                        "ttl": None if n % 4 else n,
                        "created_at": created + timedelta(seconds=n),
                    }
                    for n in range(count)
                ]
                deliveries = [
                    {"message_id": m["id"], "channel": "mqtt", "next_attempt_at": m["created_at"]}
                    for m in messages
                ]
                if way == "bulk":
                    await session.run_sync(
                        lambda sync, m=messages: insert_rows(sync.connection(), _MESSAGES, m)
                    )
                    await session.run_sync(
                        lambda sync, d=deliveries: insert_rows(sync.connection(), _DELIVERIES, d)
                    )
                else:
                    await session.execute(insert(_MESSAGES), messages)
                    await session.execute(insert(_DELIVERIES), deliveries)
            await session.commit()

        async with sessions() as session:
            raw = (await session.execute(text("SELECT * FROM messages ORDER BY id"))).all()
            loaded = (await session.scalars(select(Message).order_by(Message.id))).all()
            rows = (await session.execute(text("SELECT * FROM deliveries"))).mappings().all()
        by_id = {row[0]: row[1:] for row in raw}
        assert len(by_id) == 1 + 1 + 3 + 1100 + 1100
        for n in range(1100):  # the stored text itself, column by column, defaults included
            assert by_id[f"bulk-1100-{n:04d}"] == by_id[f"core-1100-{n:04d}"]
        assert by_id["bulk-1-0000"] == by_id["core-1-0000"]
        assert by_id["bulk-1100-0003"][-1] == "2026-12-07 01:02:06.004560"
        third = next(m for m in loaded if m.id == "bulk-3-0001")
        assert (third.title, third.priority, third.tags, third.actions) == (
            "",
            "normal",
            ["door", "alarm"],
            [],
        )
        delivered = {row["message_id"]: row for row in rows}
        for n in range(1100):
            bulk, core = delivered[f"bulk-1100-{n:04d}"], delivered[f"core-1100-{n:04d}"]
            same = ("channel", "target", "event", "state", "attempts", "next_attempt_at", "payload")
            assert [bulk[c] for c in same] == [core[c] for c in same]
            assert bulk["state"] == "pending" and bulk["created_at"] is not None
    finally:
        await engine.dispose()


async def test_batches_of_any_size_reuse_a_few_statements(tmp_path: Path) -> None:
    """SQLite compiles each new SQL text again (about 1 µs per row): batches of 1 to 300 rows go out as
    statements of a power of two of rows each, nine texts in all, every row stored once."""
    storage = StorageConfig(data_dir=str(tmp_path))
    engine = database.create_engine(storage)
    await database.upgrade(engine)
    await engine.dispose()
    journal = database.create_journal_engine(storage)
    assert journal is not None
    texts: list[str] = []
    event.listen(journal, "before_cursor_execute", lambda _c, _cur, sql, *_: texts.append(sql))
    try:
        with journal.begin() as connection:
            insert_rows(connection, Topic.__table__, [{"id": "t", "name": "bulk"}])
            texts.clear()
            for size in range(1, 301):
                rows = [
                    {"id": f"{size}-{n}", "topic_id": "t", "message": "m", "source": "mqtt"}
                    for n in range(size)
                ]
                insert_rows(connection, _MESSAGES, rows)
            stored = connection.execute(text("SELECT count(*), count(DISTINCT id) FROM messages")).one()
    finally:
        journal.dispose()
    assert tuple(stored) == (300 * 301 // 2,) * 2
    inserts = {sql for sql in texts if sql.startswith("INSERT INTO messages")}
    assert {sql.count("(?") for sql in inserts} == {1, 2, 4, 8, 16, 32, 64, 128, 256}
    assert len(inserts) == 9


def test_in_lists_keep_every_value_in_a_few_lengths() -> None:
    lengths: set[int] = set()
    for count in range(1, 1100):
        values = [f"id{n}" for n in range(count)]
        lists = list(in_lists(values))
        assert [v for part in lists for v in dict.fromkeys(part)] == values  # in order, padding repeats
        assert all(len(part) <= 512 and len(part) - len(set(part)) < len(part) / 3 for part in lists)
        lengths |= {len(part) for part in lists}
    assert lengths == _LIST_LENGTHS
    assert list(in_lists([])) == []


@pytest.mark.parametrize("paramstyle", ["qmark", "named"])
def test_a_listed_statement_touches_exactly_the_rows_listed(tmp_path: Path, paramstyle: str) -> None:
    """``ListedStatement`` on SQLite runs SQL text compiled once per list length; with another paramstyle
    (as PostgreSQL's drivers have) SQLAlchemy runs it. Either way exactly the listed rows are updated and
    selected, with the other parameters bound and processed (a datetime column)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'listed.db'}", paramstyle=paramstyle)
    topics = Topic.__table__
    Base.metadata.create_all(engine, tables=[topics])
    texts: set[str] = set()
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_: texts.add(sql))
    when = datetime(2026, 12, 7, 12, 0, 0, 123_456, tzinfo=UTC)
    mark = ListedStatement(
        lambda ids: (
            update(topics)
            .where(topics.c.id.in_(ids))
            .values(description=bindparam("b_text"), created_at=bindparam("b_when"))
        )
    )
    pick = ListedStatement(lambda ids: select(topics.c.id).where(topics.c.id.in_(ids)))
    with engine.begin() as connection:
        insert_rows(connection, topics, [{"id": f"t{n:04d}", "name": f"n{n}"} for n in range(1300)])
        for count in (1, 5, 7, 100, 513, 1100):
            listed = [f"t{n:04d}" for n in range(0, 2 * count, 2)]  # past t1299 for the longest: absent
            present = sorted(name for name in listed if name < "t1300")
            mark.run(connection, listed, {"b_text": f"marked {count}", "b_when": when})
            assert sorted(pick.run(connection, listed, {})) == present
            marked = connection.execute(
                select(topics.c.id).where(topics.c.description == f"marked {count}")
            ).scalars()
            assert sorted(marked) == present
        stored = connection.execute(text("SELECT created_at FROM topics WHERE id = 't0000'")).scalar()
    engine.dispose()
    assert stored == "2026-12-07 12:00:00.123456"
    if paramstyle == "qmark":  # the texts of the lists' lengths only, 1..512 padded
        assert {len(sql.split("IN (")[1].split(",")) for sql in texts if "IN (" in sql} <= _LIST_LENGTHS
