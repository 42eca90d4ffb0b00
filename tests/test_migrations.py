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


async def test_a_downgrade_from_0009_turns_marked_broadcasts_into_pending_deliveries(tmp_path: Path) -> None:
    """Broadcast markers exist from 0009b on; a downgrade hands each one to the delivery row that the
    earlier versions' outbox sends, so nothing marked is lost."""
    engine = database.create_engine(StorageConfig(data_dir=str(tmp_path)))
    try:
        await database.upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO topics (id, name, description, is_private, created_at)"
                    " VALUES ('t', 'garage', '', 0, '2026-12-07 10:00:00.000000')"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO messages (id, topic_id, title, message, priority, tags, actions, source,"
                    " created_at) VALUES ('m', 't', '', 'Door left open', 'normal', '[]', '[]', 'http',"
                    " '2026-12-07 10:00:01.000000')"
                )
            )
            await conn.execute(
                text("INSERT INTO pending_broadcasts (message_id, channel) VALUES ('m', 'mqtt')")
            )
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(database._alembic_config(sync), "0008i"))
        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT message_id, channel, target, event, state FROM deliveries"))
            ).all()
            tables = (
                await conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
            ).scalars()
            assert [tuple(row) for row in rows] == [("m", "mqtt", "", "", "pending")]
            assert "pending_broadcasts" not in set(tables)
    finally:
        await engine.dispose()
