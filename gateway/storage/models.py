"""The ORM models: users, user tokens, topics, API keys, messages, receipts, deliveries, devices,
webhooks and Instapush events.

Times are stored as timezone-aware UTC. Ids users see are UUIDv7 strings (``gateway.ids``), so they sort
by creation time on every backend. Credentials are stored only as SHA-256 hashes (``gateway.credentials``);
the one exception is a webhook's signing secret, which HMAC needs in clear (``Webhook``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from gateway.second_text import second_text

__all__ = [
    "ApiKey",
    "Attachment",
    "Base",
    "Delivery",
    "Device",
    "ExpoTicket",
    "InstapushEvent",
    "Message",
    "PushoverReceipt",
    "Receipt",
    "Topic",
    "User",
    "UserToken",
    "Webhook",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


# Datetimes recently written on SQLite and their text (``UtcDateTime``), by object identity, shared by every
# column: a push writes the same ``now`` into the columns of each of its rows. Each entry holds its value, so
# an identity cannot be reused while it is kept; identity, not equality, because equal instants in two
# time zones have different texts. Emptied when full.
_written_texts: dict[int, tuple[datetime, str]] = {}
_WRITTEN_TEXTS_MAX = 4096


# ``YYYY-MM-DD HH:MM:SS`` of a time's own fields (no offset), as SQLAlchemy writes it on SQLite: kept for
# the second (``second_text``), so a new value's text took 0.7 µs where ``isoformat`` of it took 1.1.
_second_text = second_text(lambda value: value.isoformat(" ", "seconds")[:19])


class UtcDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that formats a repeated value once on SQLite. SQLAlchemy's SQLite
    processor formats every value in Python (1.3 µs each, from a dict of its fields), and a push writes
    the same ``now`` three times or more (message, receipt, device deliveries): the texts of recent
    values are kept and reused while the same objects come again, and a new one is its second's text
    (``_second_text``) and its microseconds. The text is SQLAlchemy's own (the wall-clock fields, as it
    ignores the offset); other backends keep their processing."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        stock = super().bind_processor(dialect)
        if dialect.name != "sqlite" or stock is None:
            return stock

        def process(value: Any) -> Any:
            if value.__class__ is not datetime:
                return stock(value)  # None, a date, a subclass: as SQLAlchemy does it
            seen = _written_texts.get(id(value))
            if seen is not None and seen[0] is value:
                return seen[1]
            if len(_written_texts) >= _WRITTEN_TEXTS_MAX:
                _written_texts.clear()
            text = f"{_second_text(value)}.{value.microsecond:06d}"  # ``YYYY-MM-DD HH:MM:SS.ffffff``
            _written_texts[id(value)] = (value, text)
            return text

        return process


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UtcDateTime()}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserToken(Base):
    __tablename__ = "user_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    lookup: Mapped[str] = mapped_column(String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Topic(Base):
    __tablename__ = "topics"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    is_private: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    topic_id: Mapped[str] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"), index=True)
    lookup: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    topic_id: Mapped[str] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(250), default="")
    message: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    click_url: Mapped[str | None] = mapped_column(Text, default=None)
    icon_url: Mapped[str | None] = mapped_column(Text, default=None)
    image_url: Mapped[str | None] = mapped_column(Text, default=None)
    actions: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    callback_url: Mapped[str | None] = mapped_column(Text, default=None)
    sound: Mapped[str | None] = mapped_column(String(64), default=None)
    ttl: Mapped[int | None] = mapped_column(Integer, default=None)
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    topic: Mapped[Topic] = relationship(lazy="raise")

    __table_args__ = (Index("ix_messages_topic_created", "topic_id", "created_at"),)


class Receipt(Base):
    __tablename__ = "receipts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    # No index of its own: ix_receipts_topic_created_id begins with it, and serves every lookup by topic.
    topic_id: Mapped[str] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(12), default="queued")
    delivered_count: Mapped[int] = mapped_column(Integer, default=0)
    read_count: Mapped[int] = mapped_column(Integer, default=0)
    acted_count: Mapped[int] = mapped_column(Integer, default=0)
    actions_taken: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The message's broadcast (MQTT) is not settled yet: set in the message's own transaction, cleared by
    # the outbox's recorder with the broadcast's outcome, in the statement that credits the receipt.
    # A broadcast that reaches its subscribers at once, as nearly all do, leaves no delivery row; one that
    # does not (nobody subscribed yet, the broker failed) is handed to a delivery row that carries its
    # state from there. After a crash the outbox reads the receipts still flagged (through a partial
    # index that holds only those) and broadcasts their messages. A flag where a marker table held a row
    # per push (inserted, then deleted): the journal 1.4–1.7 µs less per push.
    broadcast_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    # Keyset pagination of GET /api/receipts walks (created_at, id), alone or within a topic.
    __table_args__ = (
        Index("ix_receipts_created_id", "created_at", "id"),
        Index("ix_receipts_topic_created_id", "topic_id", "created_at", "id"),
        Index(
            "ix_receipts_broadcast_pending",
            "message_id",
            sqlite_where=text("broadcast_pending = 1"),  # as SQLAlchemy writes the test there
            postgresql_where=text("broadcast_pending"),
        ),
    )

    # Declared so the unit of work inserts the message first; never loaded lazily (async).
    message: Mapped[Message] = relationship(lazy="raise")


class Delivery(Base):
    """The outbox: one row per message and target, worked by ``gateway.outbox``. A message's broadcast
    (MQTT) gets one only when it did not go out at once; until then its receipt's ``broadcast_pending``
    stands in.

    ``event`` is empty for the message itself (its envelope is built from the message row) and names the
    event otherwise (``action``, ``receipt``, ``read``, …), with its JSON kept in ``payload`` as it was when
    it happened. ``target`` is empty for broadcast channels (MQTT) and names the receiver of a targeted
    one: a webhook's id, or ``callback`` for the message's ``callback_url`` (``gateway.webhooks``).
    """

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(255), default="")
    event: Mapped[str] = mapped_column(String(16), default="", server_default="")
    payload: Mapped[str | None] = mapped_column(Text, default=None)
    state: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    # The outbox scans (state, next_attempt_at); a webhook's delivery log reads (channel, target).
    __table_args__ = (
        Index("ix_deliveries_state_next", "state", "next_attempt_at"),
        Index("ix_deliveries_channel_target", "channel", "target"),
    )

    message: Mapped[Message] = relationship(lazy="raise")


class Device(Base):
    """A push target an app (Expo push token) or a browser (Web Push subscription) registered.

    Exactly one of ``push_token`` (ios, android) and the ``webpush_*`` columns (web) is set; the rules are
    ``gateway.devices``'. A token or endpoint is unique per user, so registering it again updates the row.
    ``topics`` holds topic names; an empty list means every topic the user owns.
    """

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(8))
    push_token: Mapped[str | None] = mapped_column(String(255), default=None)
    webpush_endpoint: Mapped[str | None] = mapped_column(String(2048), default=None)
    webpush_p256dh: Mapped[str | None] = mapped_column(String(100), default=None)
    webpush_auth: Mapped[str | None] = mapped_column(String(32), default=None)
    device_name: Mapped[str] = mapped_column(String(100), default="")
    app_version: Mapped[str] = mapped_column(String(64), default="")
    external_id: Mapped[str | None] = mapped_column(String(255), default=None)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    topics: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(12), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Both lead with user_id, so they also serve "the user's devices"; NULLs never collide.
    __table_args__ = (
        UniqueConstraint("user_id", "push_token", name="uq_devices_user_push_token"),
        UniqueConstraint("user_id", "webpush_endpoint", name="uq_devices_user_webpush_endpoint"),
    )


class Webhook(Base):
    """An account's webhook: events of the owner's topics are POSTed to ``url``, signed with ``secret``.

    ``events`` holds names from ``gateway.webhooks.EVENTS`` or ``all``; ``topic_ids`` limits the webhook
    to those topics (empty: every topic the user owns). ``secret`` is kept in clear, unlike API keys and
    tokens: the gateway must compute HMAC-SHA256 with it for every delivery, and a hash cannot sign.
    """

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    topic_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ExpoTicket(Base):
    """A push ticket Expo gave for a delivery, kept until its receipt is checked (``gateway.expo_receipts``).

    One per delivery: a delivery sent again (after a crash) replaces its ticket. The row is the pending
    receipt check, so checks survive a restart; it goes when the receipt is read (or Expo has forgotten it).
    ``check_after`` is set when Expo had no receipt yet at a check: the next check is not before it.
    """

    __tablename__ = "expo_tickets"

    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    ticket_id: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(36))
    sent_at: Mapped[datetime] = mapped_column(index=True)
    check_after: Mapped[datetime | None] = mapped_column(default=None)


class PushoverReceipt(Base):
    """An emergency-priority (2) Pushover message: re-sent every ``retry`` seconds until acknowledged,
    cancelled or ``expires_at``; ``id`` is the receipt Pushover clients poll (``gateway.emergency``).
    ``callback_url`` stays on the message (signed, through the outbox, like every callback)."""

    __tablename__ = "pushover_receipts"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    topic_id: Mapped[str] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"), index=True)
    retry: Mapped[int] = mapped_column(Integer)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    next_send_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    last_delivered_at: Mapped[datetime] = mapped_column()
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    acknowledged_by: Mapped[str] = mapped_column(String(100), default="")
    acknowledged_by_device: Mapped[str] = mapped_column(String(100), default="")
    cancelled_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # The scheduler reads the rows that still re-send, by when they are due.
    __table_args__ = (Index("ix_pushover_receipts_next_send_at", "next_send_at"),)


class Attachment(Base):
    """An uploaded attachment (Pushover's ``attachment``): the bytes are the file ``<data_dir>/attachments/
    <id>``, served at ``GET /api/attachments/<id>`` with ``content_type`` (``gateway.attachments``)."""

    __tablename__ = "attachments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InstapushEvent(Base):
    """An Instapush event of an app (a topic): the trackers a post must give and the message pattern they
    fill (``gateway.instapush``). The title is unique within the topic; the rows go with the topic."""

    __tablename__ = "instapush_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    topic_id: Mapped[str] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(64))
    trackers: Mapped[list[str]] = mapped_column(JSON, default=list)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Leads with topic_id, so it also serves "the app's events".
    __table_args__ = (UniqueConstraint("topic_id", "title", name="uq_instapush_events_topic_title"),)
