"""Schema: migrations build exactly what the models say, and a database from a newer pushgate is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
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
