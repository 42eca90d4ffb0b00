"""Retention: messages older than ``[storage] retention_days`` are deleted with their receipts,
and deliveries (foreign keys cascade), so a Raspberry Pi's SD card does not fill up."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.storage.models import Delivery, Message, Receipt

__all__ = ["prune"]


async def prune(sessions: async_sessionmaker[Any], retention_days: int, now: datetime) -> int:
    """Delete messages created before ``now - retention_days``; 0 days keeps everything. Returns the count."""
    if retention_days <= 0:
        return 0
    cutoff = now - timedelta(days=retention_days)
    old = Message.created_at < cutoff
    async with sessions() as session:
        # Explicit deletes rather than relying on ON DELETE CASCADE, which SQLite applies only with
        # foreign keys switched on for the connection.
        ids = Message.__table__.select().with_only_columns(Message.id).where(old).scalar_subquery()
        await session.execute(delete(Delivery).where(Delivery.message_id.in_(ids)))
        await session.execute(delete(Receipt).where(Receipt.message_id.in_(ids)))
        result = await session.execute(delete(Message).where(old))
        await session.commit()
    return int(getattr(result, "rowcount", 0) or 0)
