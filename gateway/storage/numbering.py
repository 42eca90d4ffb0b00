"""Delivery ids given by pushgate on SQLite, so new outbox rows go out as one executemany INSERT.

SQLite cannot return the ids of a multi-row INSERT in order, so for rows without ids SQLAlchemy sends one
INSERT per delivery: a driver round trip (a thread hop with aiosqlite) per row, the largest single cost
of a push. A transaction that has already written holds SQLite's write lock until it commits, so nobody
else can insert a delivery meanwhile and the ids after the current maximum are its own. Other backends
return the ids of a multi-row INSERT in order themselves and are left to do so.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from gateway.storage.models import Delivery

__all__ = ["number_new_deliveries", "reserve_delivery_ids"]

_TOP = select(
    func.max(Delivery.id)
)  # built once: once per group commit, and building it cost more than running it


def reserve_delivery_ids(connection: Connection) -> int | None:
    """The first of the free delivery ids (all after it are free too), or ``None`` where the database
    numbers rows itself. Only for a transaction that has written already: the write lock makes them safe."""
    if connection.dialect.name != "sqlite":
        return None
    top = connection.scalar(_TOP)
    return (top or 0) + 1


async def number_new_deliveries(session: Any, *, written: bool = False) -> None:
    """Number the deliveries added to ``session`` since its last flush, in the order they were added.

    ``written`` says this transaction has written already; otherwise the other new rows are flushed
    first to take the lock, and with none the ORM numbers the rows as usual.
    """
    new = [row for row in session.new if isinstance(row, Delivery) and row.id is None]
    if not new or not (written or len(session.new) > len(new)):
        return
    for row in new:
        session.expunge(row)
    await session.flush()
    first = await session.run_sync(lambda sync: reserve_delivery_ids(sync.connection()))
    if first is not None:
        for number, row in enumerate(new, first):
            row.id = number
    session.add_all(new)
