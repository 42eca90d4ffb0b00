"""Engine creation and schema migrations.

The engine is created at start-up and disposed last. SQLite gets WAL mode (readers never block the
writer), foreign keys on, and the configured ``synchronous`` level; other backends are used as given.
Migrations are Alembic's, run in-process at start so ``pushgate serve`` on a fresh data dir just works.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import QueuePool

from gateway.config import StorageConfig
from gateway.errors import ConfigError, SchemaError

__all__ = [
    "create_engine",
    "create_journal_engine",
    "current_revision",
    "has_own_file",
    "head_revision",
    "session_factory",
    "to_json",
    "upgrade",
]

log = logging.getLogger(__name__)
_MIGRATIONS = Path(__file__).parent / "migrations"
_SYNC_LEVELS = {"OFF", "NORMAL", "FULL", "EXTRA"}


def to_json(value: Any) -> str:
    """JSON columns' serializer: ``json.dumps``, except that an empty list (the tags and actions of most
    messages, two per push) is answered without the encoder's Python-level set-up."""
    if value.__class__ is list and not value:
        return "[]"
    return json.dumps(value)


def create_engine(config: StorageConfig) -> AsyncEngine:
    url = make_url(config.resolved_database_url())
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, json_serializer=to_json)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url, connect_args={"timeout": config.sqlite_busy_timeout}, json_serializer=to_json
    )
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas(config))
    return engine


def has_own_file(config: StorageConfig) -> bool:
    """Whether the database is a SQLite file, which the journal process opens a connection of its own to
    (``gateway.storage.journal``); not for other databases, nor SQLite in memory (a second connection would
    not see it)."""
    url = make_url(config.resolved_database_url())
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")


def create_journal_engine(config: StorageConfig) -> Engine | None:
    """The journal process's own connection (``gateway.storage.journal``) to a SQLite file: the standard
    library's driver, with the same pragmas and busy timeout as the async engine's. ``None`` where
    ``has_own_file`` says no."""
    if not has_own_file(config):
        return None
    url = make_url(config.resolved_database_url())
    engine = sqlalchemy.create_engine(
        url.set(drivername="sqlite"),
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=0,
        connect_args={"timeout": config.sqlite_busy_timeout, "check_same_thread": False},
        json_serializer=to_json,
    )
    event.listen(engine, "connect", _sqlite_pragmas(config))
    event.listen(engine, "connect", _temporaries_in_memory)
    return engine


def _temporaries_in_memory(dbapi_conn: Any, _record: Any) -> None:
    """The journal's statements are a batch each, so what SQLite keeps aside while one runs (a multi-row
    INSERT's statement journal, an IN list's table) is small: in memory instead of a temporary file made
    and unlinked per transaction (200 a second under push load)."""
    dbapi_conn.execute("PRAGMA temp_store=MEMORY")


def _sqlite_pragmas(config: StorageConfig) -> Callable[[Any, Any], None]:
    """The connect hook of every SQLite connection: WAL (readers never block the writer), the configured
    ``synchronous`` level, foreign keys on."""
    synchronous = config.sqlite_synchronous.upper()
    if synchronous not in _SYNC_LEVELS:
        raise ConfigError(f"[storage] sqlite_synchronous must be one of {sorted(_SYNC_LEVELS)}")

    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return pragmas


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "the package ships at least one migration"
    return head


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def _upgrade(connection: Connection) -> None:
    cfg = _alembic_config(connection)
    rev = _current(connection)
    script = ScriptDirectory.from_config(cfg)
    if rev is not None:
        try:
            known = script.get_revision(rev)
        except Exception:  # alembic raises several types for an unknown id
            known = None
        if known is None:
            raise SchemaError(
                f"the database is at migration {rev}, which this pushgate does not know: "
                "it was written by a newer version. Upgrade pushgate, or use another database."
            )
    command.upgrade(cfg, "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every pending migration; refuse a database written by a newer pushgate."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
