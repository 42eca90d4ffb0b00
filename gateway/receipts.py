"""Delivery receipts, the read side: one receipt by id, and a filtered list in stable pages.

Every edge that shows receipts (the iotpush-style ``/api/receipts`` now, later Pushover's receipt API and
the dashboard) calls this module, so who may read what and how pages are cut is decided once, here.

Who may read:

- A credential is required. Anonymous callers are refused (401) even for public topics: a receipt says
  who read a notification and which action they took, which is more than the notification itself.
- One receipt by id: readable when ``Access.may_access`` grants its topic, the rule that also governs
  publishing. A topic key reads its own topic, and a user token reads the topics its user owns plus every
  public topic. An unknown id and a receipt the caller may not read get the same 404, so ids cannot be
  probed.
- The list: a topic key lists its own topic, and a user token lists the topics its user *owns*. Public
  topics the user does not own are left out, also when named in ``topic_id`` (the page is then empty):
  on a shared gateway they carry other people's traffic, and nobody wants that in their receipt list.
  A user can still read a single receipt of such a topic by its id (from the push answer or the MQTT
  envelope). Every topic listed this way is one ``may_access`` grants.

Query parameters of the list (strings, as an HTTP query carries them; empty values count as absent):

- ``topic_id``: a topic's id, or its name for convenience (``curl`` users know names, not ids).
- ``status``: one of ``STATUSES``.
- ``since``: ISO 8601. Only receipts created strictly after it are listed. A time without an offset is
  UTC, and a ``+`` that the URL decoding turned into a space is put back.
- ``limit``: default 50 per page. A value above 100 is clamped to 100, as iotpush documents 100 as the
  page maximum and a client asking for more still gets everything by following ``next_cursor``. A
  non-integer or a value below 1 is refused.
- ``cursor``: the ``next_cursor`` of the previous page, passed back unchanged.

Pages are newest first, ordered by ``(created_at, id)`` descending. The cursor is a keyset position
rather than an offset, so walking the pages yields every receipt exactly once: the id breaks ties
between receipts created in the same microsecond, and receipts written between two page requests
cannot shift the rows still to come. The cursor is urlsafe base64, without padding, of
``1:<created_at in microseconds since the Unix epoch, UTC>:<receipt id>``. The leading ``1`` is the
format version. The cursor is opaque to clients, and one that does not decode is a 400 naming
``cursor``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.access import Access, Principal, topic_info
from gateway.envelope import as_utc, iso
from gateway.errors import NotFound, Unauthorized, ValidationError
from gateway.storage.models import Receipt, Topic

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "STATUSES",
    "Cursor",
    "ReceiptPage",
    "ReceiptQuery",
    "Receipts",
    "receipt_dict",
]

STATUSES = ("queued", "delivered", "read", "acted", "expired", "failed")
# Page sizes are part of the iotpush API contract (its docs: "default 50, max 100"), not deployment
# tuning. 100 rows keeps one page's query and JSON answer small.
DEFAULT_LIMIT = 50
MAX_LIMIT = 100

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CURSOR_TEXT = re.compile(r"1:([0-9]{1,20}):([0-9A-Za-z-]{1,64})")
_LIMIT_TEXT = re.compile(r"-?[0-9]+")


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the newest-first order: the last receipt of the previous page."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        micros = (as_utc(self.created_at) - _EPOCH) // _MICROSECOND
        return base64.urlsafe_b64encode(f"1:{micros}:{self.id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
            found = _CURSOR_TEXT.fullmatch(raw.decode("ascii"))
            if found is None:
                raise ValueError("not a receipts cursor")
            created_at = _EPOCH + int(found[1]) * _MICROSECOND
        except (ValueError, OverflowError) as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise ValidationError(
                "cursor",
                "the cursor is not one this server handed out: pass the previous page's next_cursor "
                "unchanged, or leave cursor out to start at the newest receipt",
            ) from exc
        return cls(created_at, found[2])


@dataclass(frozen=True, slots=True)
class ReceiptQuery:
    """A validated list request; ``from_params`` builds it from query-string values."""

    topic_id: str | None = None
    status: str | None = None
    since: datetime | None = None
    cursor: Cursor | None = None
    limit: int = DEFAULT_LIMIT

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> ReceiptQuery:
        def value(name: str) -> str | None:
            return params.get(name) or None

        status = value("status")
        if status is not None and status not in STATUSES:
            raise ValidationError("status", f"status must be one of {', '.join(STATUSES)}")
        since = value("since")
        cursor = value("cursor")
        limit = value("limit")
        return cls(
            topic_id=value("topic_id"),
            status=status,
            since=_parse_since(since) if since is not None else None,
            cursor=Cursor.decode(cursor) if cursor is not None else None,
            limit=_parse_limit(limit) if limit is not None else DEFAULT_LIMIT,
        )


@dataclass(frozen=True, slots=True)
class ReceiptPage:
    receipts: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"receipts": self.receipts, "next_cursor": self.next_cursor}


def receipt_dict(receipt: Receipt) -> dict[str, Any]:
    """The documented receipt shape; ``actions_taken`` is stored in its final shape already."""
    return {
        "receipt_id": receipt.id,
        "message_id": receipt.message_id,
        "topic_id": receipt.topic_id,
        "status": receipt.status,
        "delivered_count": receipt.delivered_count,
        "read_count": receipt.read_count,
        "acted_count": receipt.acted_count,
        "actions_taken": list(receipt.actions_taken or []),
        "created_at": iso(receipt.created_at),
        "updated_at": iso(receipt.updated_at),
    }


class Receipts:
    def __init__(self, sessions: async_sessionmaker[Any], access: Access) -> None:
        self._sessions = sessions
        self._access = access

    async def get(self, principal: Principal, receipt_id: str) -> dict[str, Any]:
        """One receipt, or ``NotFound`` both when it does not exist and when the caller may not read it."""
        _require_credential(principal)
        stmt = select(Receipt, Topic).join(Topic, Topic.id == Receipt.topic_id)
        stmt = stmt.where(Receipt.id == receipt_id)
        async with self._sessions() as session:
            found = (await session.execute(stmt)).first()
        if found is None or not self._access.may_access(principal, topic_info(found[1])):
            raise NotFound(
                "no receipt with this id that this credential may read; "
                "use the receipt_id of the push answer and a key of its topic or its owner's token",
                error="Receipt not found",
            )
        return receipt_dict(found[0])

    async def page(self, principal: Principal, query: ReceiptQuery | Mapping[str, str]) -> ReceiptPage:
        """One page of the caller's receipts, newest first. ``query`` may be raw query-string values,
        which are validated only after the credential was checked."""
        _require_credential(principal)
        if not isinstance(query, ReceiptQuery):
            query = ReceiptQuery.from_params(query)
        stmt = select(Receipt).join(Topic, Topic.id == Receipt.topic_id)
        if principal.kind == "key":
            stmt = stmt.where(Receipt.topic_id == principal.topic_id)
        else:
            stmt = stmt.where(Topic.owner_id == principal.user_id)
        if query.topic_id is not None:
            stmt = stmt.where(or_(Topic.id == query.topic_id, Topic.name == query.topic_id))
        if query.status is not None:
            stmt = stmt.where(Receipt.status == query.status)
        if query.since is not None:
            stmt = stmt.where(Receipt.created_at > query.since)
        if query.cursor is not None:
            after = query.cursor
            stmt = stmt.where(
                or_(
                    Receipt.created_at < after.created_at,
                    and_(Receipt.created_at == after.created_at, Receipt.id < after.id),
                )
            )
        # One row more than asked tells whether another page exists, without a count query.
        stmt = stmt.order_by(Receipt.created_at.desc(), Receipt.id.desc()).limit(query.limit + 1)
        async with self._sessions() as session:
            rows = list(await session.scalars(stmt))
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        next_cursor = Cursor(as_utc(rows[-1].created_at), rows[-1].id).encode() if more else None
        return ReceiptPage([receipt_dict(r) for r in rows], next_cursor)


def _require_credential(principal: Principal) -> None:
    if principal.kind == "anonymous":
        raise Unauthorized(
            "reading receipts needs a user token (Authorization: Bearer <token>) "
            "or an API key of the topic (X-Api-Key: <key>)",
            error="Authentication required",
        )


def _parse_since(text: str) -> datetime:
    head, space, tail = text.rpartition(" ")
    candidates = [text, f"{head}+{tail}"] if space else [text]
    for candidate in candidates:
        try:
            # Datetimes are bound to SQLite without their offset, so bind UTC only.
            return as_utc(datetime.fromisoformat(candidate))
        except (ValueError, OverflowError):
            continue
    raise ValidationError(
        "since", "since must be an ISO 8601 time, e.g. 2026-04-10T00:06:01Z or 2026-04-10T02:06:01+02:00"
    )


def _parse_limit(text: str) -> int:
    try:
        if not _LIMIT_TEXT.fullmatch(text):
            raise ValueError(text)
        limit = int(text)
    except ValueError as exc:
        raise ValidationError("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}") from exc
    if limit < 1:
        raise ValidationError("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return min(limit, MAX_LIMIT)
