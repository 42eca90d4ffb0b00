"""Delivery ids given by pushgate on SQLite, so new outbox rows go out as one executemany INSERT.

SQLite cannot return the ids of a multi-row INSERT in order, so for rows without ids SQLAlchemy's unit of
work sends one INSERT per delivery: a driver round trip (a thread hop with aiosqlite) per row, the
largest single cost of a push. A transaction that has already written holds SQLite's write lock until it
commits, so nobody else can insert a delivery meanwhile and the ids after the current maximum are its
own. Other backends return ordered ids from a multi-row INSERT themselves and are left alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from gateway.storage.models import Delivery

__all__ = ["number_new_deliveries"]


async def number_new_deliveries(session: Any, *, written: bool = False) -> None:
    """Number the deliveries added to ``session`` since its last flush, in the order they were added.

    The write lock is what makes the numbers safe: ``written`` says this transaction has written already;
    otherwise the other new rows are flushed first, and with none the ORM numbers the rows as usual.
    """
    if session.get_bind().dialect.name != "sqlite":
        return
    new = [row for row in session.new if isinstance(row, Delivery) and row.id is None]
    if not new or not (written or len(session.new) > len(new)):
        return
    for row in new:
        session.expunge(row)
    await session.flush()
    top = await session.scalar(select(func.max(Delivery.id))) or 0
    for number, row in enumerate(new, top + 1):
        row.id = number
    session.add_all(new)
