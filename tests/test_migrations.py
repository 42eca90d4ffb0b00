"""Schema: migrations build exactly what the models say, and a database from a newer pushgate is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from gateway.config import StorageConfig
from gateway.errors import SchemaError
from gateway.outbox import PENDING_BROADCASTS
from gateway.storage import database
from gateway.storage.models import Base


async def test_migrations_match_the_models(tmp_path: Path) -> None:
    engine = database.create_engine(StorageConfig(data_dir=str(tmp_path)))
    try:
        await database.upgrade(engine)
        assert await database.current_revision(engine) == database.head_revision()
        async with engine.connect() as conn:
            diff = await conn.run_sync(_schema_diff)
        assert diff == [], "models changed without a migration: run alembic revision --autogenerate"
    finally:
        await engine.dispose()


async def test_upgrade_is_idempotent_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    engine = database.create_engine(StorageConfig(data_dir=str(tmp_path)))
    try:
        await database.upgrade(engine)
        await database.upgrade(engine)  # nothing to do, no error
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(SchemaError, match="9999"):
            await database.upgrade(engine)
    finally:
        await engine.dispose()


def _schema_diff(connection: object) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))  # type: ignore[arg-type]


async def test_marked_broadcasts_survive_the_upgrade_to_flags_and_every_downgrade(tmp_path: Path) -> None:
    """A broadcast still pending is a marker row in 0009b, a flag on the receipt from 0010r on: the
    upgrade turns the marker into the flag, a downgrade to 0009b the flag back into the marker, and one to
    0008i the marker into the pending delivery row that earlier versions' outbox sends, so nothing is
    lost on the way."""
    engine = database.create_engine(StorageConfig(data_dir=str(tmp_path)))

    async def migrate(to: str, up: bool) -> None:
        step = command.upgrade if up else command.downgrade
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: step(database._alembic_config(sync), to))

    async def found(sql: str) -> list[tuple[object, ...]]:
        async with engine.connect() as conn:
            return [tuple(row) for row in (await conn.execute(text(sql))).all()]

    try:
        await migrate("0009b", up=True)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO topics (id, name, description, is_private, created_at)"
                    " VALUES ('t', 'garage', '', 0, '2026-12-07 10:00:00.000000')"
                )
            )
            for message in ("m", "n"):
                await conn.execute(
                    text(
                        "INSERT INTO messages (id, topic_id, title, message, priority, tags, actions, source,"
                        f" created_at) VALUES ('{message}', 't', '', 'Door left open', 'normal', '[]', '[]',"
                        " 'http', '2026-12-07 10:00:01.000000')"
                    )
                )
                await conn.execute(
                    text(
                        "INSERT INTO receipts (id, message_id, topic_id, status, delivered_count, read_count,"
                        f" acted_count, actions_taken, created_at, updated_at) VALUES ('r{message}',"
                        f" '{message}', 't', 'queued', 0, 0, 0, '[]', '2026-12-07 10:00:01.000000',"
                        " '2026-12-07 10:00:01.000000')"
                    )
                )
            await conn.execute(
                text("INSERT INTO pending_broadcasts (message_id, channel) VALUES ('m', 'mqtt')")
            )
        await migrate("head", up=True)
        assert await found("SELECT message_id, broadcast_pending FROM receipts ORDER BY message_id") == [
            ("m", 1),
            ("n", 0),
        ]
        assert await found("SELECT name FROM sqlite_master WHERE name = 'pending_broadcasts'") == []
        await migrate("0009b", up=False)
        assert await found("SELECT message_id, channel FROM pending_broadcasts") == [("m", "mqtt")]
        await migrate("0008i", up=False)
        assert await found("SELECT message_id, channel, target, event, state FROM deliveries") == [
            ("m", "mqtt", "", "", "pending")
        ]
        assert await found("SELECT name FROM sqlite_master WHERE name = 'pending_broadcasts'") == []
    finally:
        await engine.dispose()


async def test_the_scan_for_pending_broadcasts_reads_their_partial_index(tmp_path: Path) -> None:
    """After a restart the outbox reads the messages whose broadcast is pending; SQLite finds them in the
    partial index that holds only those, not by scanning every receipt kept (retention keeps 30 days)."""
    engine = database.create_engine(StorageConfig(data_dir=str(tmp_path)))
    try:
        await database.upgrade(engine)
        query = PENDING_BROADCASTS.limit(100).compile(
            engine.sync_engine, compile_kwargs={"literal_binds": True}
        )
        async with engine.connect() as conn:
            plan = (await conn.execute(text(f"EXPLAIN QUERY PLAN {query}"))).all()
        assert [row[-1] for row in plan] == ["SCAN receipts USING INDEX ix_receipts_broadcast_pending"]
    finally:
        await engine.dispose()


async def test_receipts_are_found_by_topic_through_the_composite_index_alone(tmp_path: Path) -> None:
    """0011t drops the single-column index on ``receipts.topic_id``: a topic key's receipt listing and the
    cascade of a topic's deletion (a search by ``topic_id``) read ``ix_receipts_topic_created_id``, which
    begins with that column. A downgrade puts the index back."""
    engine = database.create_engine(StorageConfig(data_dir=str(tmp_path)))

    async def plan(query: str) -> list[str]:
        async with engine.connect() as conn:
            return [row[-1] for row in (await conn.execute(text(f"EXPLAIN QUERY PLAN {query}"))).all()]

    async def receipt_indexes() -> set[str]:
        async with engine.connect() as conn:
            found = await conn.execute(text("SELECT name FROM sqlite_master WHERE tbl_name = 'receipts'"))
            return {name for (name,) in found if name.startswith("ix_")}

    try:
        await database.upgrade(engine)
        assert "ix_receipts_topic_id" not in await receipt_indexes()
        assert await plan("SELECT id FROM receipts WHERE topic_id = 't'") == [
            "SEARCH receipts USING COVERING INDEX ix_receipts_topic_created_id (topic_id=?)"
        ]
        listing = (
            "SELECT id FROM receipts WHERE topic_id = 't' AND created_at > '2026-01-01'"
            " ORDER BY created_at DESC, id DESC LIMIT 10"
        )
        assert await plan(listing) == [
            "SEARCH receipts USING COVERING INDEX ix_receipts_topic_created_id (topic_id=? AND created_at>?)"
        ]

        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(database._alembic_config(sync), "0010r"))
        assert "ix_receipts_topic_id" in await receipt_indexes()
    finally:
        await engine.dispose()
