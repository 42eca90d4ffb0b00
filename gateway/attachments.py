"""Attachments: bytes a client uploaded with a message (Pushover's ``attachment``), kept in the data dir.

Each attachment is the file ``<data_dir>/attachments/<id>`` plus a row with its content type and size; it
is served at ``GET /api/attachments/<id>`` and a message points at it through its ``image_url``. The file
is written and fsynced (in a thread: the event loop never blocks on the disk) before its row is committed,
so a row always has its bytes. The id is a UUIDv7: unguessable enough for a picture behind a URL, as
Pushover's own image URLs are, and time-sortable like every other id.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.errors import NotFound, PayloadTooLarge, ValidationError
from gateway.ids import new_id
from gateway.storage.models import Attachment, utcnow

__all__ = ["Attachments", "StoredAttachment"]

_FOLDER = "attachments"
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}")
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class StoredAttachment:
    id: str
    content_type: str
    size: int
    path: Path


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Attachments:
    def __init__(self, sessions: async_sessionmaker[Any], data_dir: str, max_bytes: int) -> None:
        self._sessions = sessions
        self._folder = Path(data_dir) / _FOLDER
        self.max_bytes = max_bytes

    def check(self, size: int, content_type: str, field: str = "attachment") -> str:
        """Refuse an attachment over ``max_bytes`` or with a malformed content type; the type to store."""
        if size > self.max_bytes:
            raise PayloadTooLarge(
                f"attachment size is {size} bytes; the limit is {self.max_bytes} bytes",
                error="Attachment too large",
            )
        if size == 0:
            raise ValidationError(field, "attachment is empty")
        content_type = content_type.split(";", 1)[0].strip().lower() or "application/octet-stream"
        if not _CONTENT_TYPE.fullmatch(content_type):
            raise ValidationError(field, f"attachment type {content_type[:40]!r} is not a MIME type")
        return content_type

    async def save(self, data: bytes, content_type: str) -> StoredAttachment:
        content_type = self.check(len(data), content_type)
        attachment_id = new_id()
        path = self._folder / attachment_id
        await asyncio.to_thread(_write, path, data)
        async with self._sessions() as session:
            session.add(
                Attachment(id=attachment_id, content_type=content_type, size=len(data), created_at=utcnow())
            )
            await session.commit()
        return StoredAttachment(attachment_id, content_type, len(data), path)

    async def get(self, attachment_id: str) -> StoredAttachment:
        """The stored attachment; ``NotFound`` for an unknown or malformed id."""
        row = None
        if _ID.fullmatch(attachment_id):
            async with self._sessions() as session:
                row = await session.get(Attachment, attachment_id)
        path = self._folder / attachment_id
        if row is None or not await asyncio.to_thread(path.is_file):
            raise NotFound(f"no attachment {attachment_id[:36]!r}", error="Attachment not found")
        return StoredAttachment(row.id, row.content_type, row.size, path)

    async def discard(self, attachment_id: str) -> None:
        """Remove an attachment whose message was refused after it was stored."""
        async with self._sessions() as session:
            await session.execute(delete(Attachment).where(Attachment.id == attachment_id))
            await session.commit()
        await asyncio.to_thread((self._folder / attachment_id).unlink, True)
