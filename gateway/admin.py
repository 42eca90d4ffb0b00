"""Management of users, tokens, topics and keys: used by the CLI and by the /api management routes.

Secrets are returned once, at creation, and only their hashes are stored.

Two kinds of callers share one implementation. The CLI works by name on every topic (it runs as the
operator). The management API works by id and only on the calling user's own topics: the ``*_user_*``
and ``*_topic_key*`` methods take the owner's id, and a topic of another user answers exactly as an
unknown id does (``NotFound``), so ids of other users' topics cannot be probed. They also take the request
fields as a mapping and check them here, each error naming its field; unknown fields are refused so a typo
such as ``"private": true`` cannot silently leave a topic public. The read-only fields of the objects the
API returns (``id``, ``created_at``, ``key_count``, …) are ignored, so a client may send back what it got.

Every change that affects access (create, rename, privacy, delete) is reported through
``on_topic_change(name)``, which the core wires to ``TopicDirectory.invalidate``: the running server
applies it at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway import credentials
from gateway.errors import Conflict, NotFound, ValidationError
from gateway.ids import new_id
from gateway.storage.models import (
    ApiKey,
    Delivery,
    Message,
    Receipt,
    Topic,
    User,
    UserToken,
    utcnow,
)
from gateway.storage.owned import owned
from gateway.topics import check_topic_name

__all__ = ["DESCRIPTION_MAX_CHARS", "LABEL_MAX_CHARS", "Admin", "Created", "IssuedKey"]

# A topic description is a line or two shown next to the name; the request body is bounded separately
# by [http] max_body_bytes.
DESCRIPTION_MAX_CHARS = 1000
# The width of the api_keys.label column.
LABEL_MAX_CHARS = 100

# Called with the session and the key inside the transaction that revokes it.
AlsoOnRevoke = Callable[[Any, ApiKey], Awaitable[None]]

_TOPIC_FIELDS = ("name", "description", "is_private")
_TOPIC_READ_ONLY = frozenset({"id", "created_at", "key_count", "owner_id"})
_KEY_FIELDS = ("label",)
_KEY_READ_ONLY = frozenset({"id", "created_at", "last_used_at", "revoked_at"})


@dataclass(frozen=True, slots=True)
class Created:
    """A new row and the secret that belongs to it, shown to the person once."""

    id: str
    secret: str


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new API key row and its secret, shown to the person once."""

    key: ApiKey
    secret: str


def _known_fields(fields: Mapping[str, Any], allowed: tuple[str, ...], read_only: frozenset[str]) -> None:
    for field in fields:
        if field not in allowed and field not in read_only:
            raise ValidationError(field, f'unknown field "{field}"; the fields are {", ".join(allowed)}')


def _topic_name(value: Any) -> str:
    """The topic-name rule of ``gateway.topics``, reported as the request field ``name``."""
    if value is None:
        raise ValidationError("name", 'name is required, e.g. {"name": "server-alerts"}')
    try:
        return check_topic_name(value if isinstance(value, str) else "")
    except ValidationError as exc:
        raise ValidationError("name", exc.message) from None


def _description(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError("description", "description must be a string")
    if len(value) > DESCRIPTION_MAX_CHARS:
        raise ValidationError(
            "description", f"description is {len(value)} characters; the limit is {DESCRIPTION_MAX_CHARS}"
        )
    return value


def _is_private(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("is_private", "is_private must be true or false")
    return value


def _label(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError("label", "label must be a string")
    if len(value) > LABEL_MAX_CHARS:
        raise ValidationError("label", f"label is {len(value)} characters; the limit is {LABEL_MAX_CHARS}")
    return value


class Admin:
    def __init__(
        self,
        sessions: async_sessionmaker[Any],
        on_topic_change: Callable[[str], None] | None = None,
        on_keys_revoked: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        # Called after keys stop being valid (revoked, or deleted with their topic), so live MQTT
        # sessions using them are re-checked at once rather than at the next audit.
        self._on_keys_revoked = on_keys_revoked or (lambda: None)
        self._on_topic_change = on_topic_change or (lambda _name: None)

    # -- users ---------------------------------------------------------------------------------------

    async def create_user(self, name: str) -> Created:
        if not name or len(name) > 64:
            raise ValidationError("name", "a user name is 1-64 characters")
        cred = credentials.generate(credentials.TOKEN_PREFIX)
        user = User(id=new_id(), name=name)
        try:
            async with self._sessions() as session:
                session.add(user)
                await session.flush()
                session.add(
                    UserToken(
                        id=new_id(),
                        user_id=user.id,
                        lookup=cred.lookup,
                        token_hash=credentials.hash_secret(cred.value),
                        label="created with the user",
                    )
                )
                await session.commit()
        except IntegrityError as exc:
            raise Conflict(f'a user named "{name}" exists already') from exc
        return Created(user.id, cred.value)

    async def _user_id(self, session: Any, name: str) -> str:
        user_id = await session.scalar(select(User.id).where(User.name == name))
        if user_id is None:
            raise NotFound(f'no user named "{name}"; create one with pushgate user create {name}')
        return str(user_id)

    # -- topics --------------------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        *,
        private: bool = False,
        description: str = "",
        owner: str | None = None,
        owner_id: str | None = None,
    ) -> Topic:
        """Create a topic; ``owner`` names its user (the CLI), ``owner_id`` is the user's id (the API)."""
        name = _topic_name(name)
        private = _is_private(private)
        description = _description(description)
        try:
            async with self._sessions() as session:
                if owner:
                    owner_id = await self._user_id(session, owner)
                topic = Topic(
                    id=new_id(),
                    name=name,
                    is_private=private,
                    description=description,
                    owner_id=owner_id,
                    created_at=utcnow(),
                )
                session.add(topic)
                await session.commit()
        except IntegrityError as exc:
            raise Conflict(f'topic "{name}" exists already') from exc
        self._on_topic_change(name)
        return topic

    async def create_user_topic(self, owner_id: str, fields: Mapping[str, Any]) -> Topic:
        """Create a topic owned by the user from request fields: ``name``, ``description``, ``is_private``."""
        _known_fields(fields, _TOPIC_FIELDS, _TOPIC_READ_ONLY)
        return await self.create_topic(
            fields.get("name"),
            private=fields.get("is_private", False),
            description=fields.get("description", ""),
            owner_id=owner_id,
        )

    async def list_topics(self, *, owner_id: str | None = None) -> list[tuple[Topic, int]]:
        """Every topic (or only those ``owner_id`` owns) with its number of active keys, by name."""
        active = func.count(ApiKey.id).filter(ApiKey.revoked_at.is_(None))
        query = select(Topic, active).outerjoin(ApiKey).group_by(Topic.id).order_by(Topic.name)
        if owner_id is not None:
            query = query.where(Topic.owner_id == owner_id)
        async with self._sessions() as session:
            rows = await session.execute(query)
            return [(topic, count) for topic, count in rows.all()]

    async def update_user_topic(
        self, owner_id: str, topic_id: str, changes: Mapping[str, Any]
    ) -> tuple[Topic, int]:
        """Change any of ``name``, ``description``, ``is_private``; returns the topic and its active keys."""
        _known_fields(changes, _TOPIC_FIELDS, _TOPIC_READ_ONLY)
        values: dict[str, Any] = {}
        if "name" in changes:
            values["name"] = _topic_name(changes["name"])
        if "description" in changes:
            values["description"] = _description(changes["description"])
        if "is_private" in changes:
            values["is_private"] = _is_private(changes["is_private"])
        try:
            async with self._sessions() as session:
                topic = await self._owned_topic(session, owner_id, topic_id)
                before = (topic.name, topic.is_private)
                for field, value in values.items():
                    setattr(topic, field, value)
                await session.commit()
                keys = await self._active_key_count(session, topic.id)
        except IntegrityError as exc:
            raise Conflict(f'topic "{values.get("name")}" exists already') from exc
        if (topic.name, topic.is_private) != before:
            self._on_topic_change(before[0])
            self._on_topic_change(topic.name)
        return topic, keys

    async def delete_user_topic(self, owner_id: str, topic_id: str) -> tuple[Topic, int]:
        """Delete the topic with its messages (and their receipts and deliveries) and keys.

        Returns the deleted topic and the number of messages deleted. The child rows are deleted
        explicitly, in one transaction, rather than relying on ON DELETE CASCADE (SQLite applies it only
        with foreign keys switched on for the connection).
        """
        async with self._sessions() as session:
            topic = await self._owned_topic(session, owner_id, topic_id)
            messages = select(Message.id).where(Message.topic_id == topic.id).scalar_subquery()
            await session.execute(delete(Delivery).where(Delivery.message_id.in_(messages)))
            await session.execute(delete(Receipt).where(Receipt.message_id.in_(messages)))
            result = await session.execute(delete(Message).where(Message.topic_id == topic.id))
            await session.execute(delete(ApiKey).where(ApiKey.topic_id == topic.id))
            await session.execute(delete(Topic).where(Topic.id == topic.id))
            await session.commit()
        self._on_topic_change(topic.name)
        self._on_keys_revoked()
        return topic, int(getattr(result, "rowcount", 0) or 0)

    async def _topic(self, session: Any, name: str) -> Topic:
        topic = await session.scalar(select(Topic).where(Topic.name == name))
        if topic is None:
            raise NotFound(f'topic "{name}" does not exist; create it with pushgate topic create {name}')
        return topic  # type: ignore[no-any-return]

    async def _owned_topic(self, session: Any, owner_id: str, topic_id: str) -> Topic:
        """The user's topic; another user's topic is reported exactly like an unknown id."""
        return await owned(
            session, Topic, topic_id, Topic.owner_id, owner_id, what="topic", listing="/api/topics"
        )

    async def _active_key_count(self, session: Any, topic_id: str) -> int:
        count = await session.scalar(
            select(func.count(ApiKey.id)).where(ApiKey.topic_id == topic_id, ApiKey.revoked_at.is_(None))
        )
        return int(count or 0)

    # -- API keys ------------------------------------------------------------------------------------

    @staticmethod
    def _issue_key(session: Any, topic_id: str, label: Any) -> IssuedKey:
        """The one place a key is made: its secret from ``credentials``, stored only as a hash."""
        label = _label(label)
        cred = credentials.generate(credentials.KEY_PREFIX)
        key = ApiKey(
            id=new_id(),
            topic_id=topic_id,
            lookup=cred.lookup,
            key_hash=credentials.hash_secret(cred.value),
            label=label,
            created_at=utcnow(),
        )
        session.add(key)
        return IssuedKey(key, cred.value)

    async def create_key(self, topic_name: str, *, label: str = "") -> Created:
        async with self._sessions() as session:
            topic = await self._topic(session, topic_name)
            issued = self._issue_key(session, topic.id, label)
            await session.commit()
        return Created(issued.key.id, issued.secret)

    async def create_topic_key(self, owner_id: str, topic_id: str, fields: Mapping[str, Any]) -> IssuedKey:
        """A new key for the user's topic; ``fields`` may hold a ``label``."""
        _known_fields(fields, _KEY_FIELDS, _KEY_READ_ONLY)
        async with self._sessions() as session:
            topic = await self._owned_topic(session, owner_id, topic_id)
            issued = self._issue_key(session, topic.id, fields.get("label"))
            await session.commit()
        return issued

    @staticmethod
    async def _keys(session: Any, topic_id: str) -> list[ApiKey]:
        rows = await session.scalars(
            select(ApiKey).where(ApiKey.topic_id == topic_id).order_by(ApiKey.created_at, ApiKey.id)
        )
        return list(rows)

    async def list_keys(self, topic_name: str) -> list[ApiKey]:
        async with self._sessions() as session:
            topic = await self._topic(session, topic_name)
            return await self._keys(session, topic.id)

    async def list_topic_keys(self, owner_id: str, topic_id: str) -> list[ApiKey]:
        async with self._sessions() as session:
            topic = await self._owned_topic(session, owner_id, topic_id)
            return await self._keys(session, topic.id)

    async def _revoke(self, session: Any, key: ApiKey, also: AlsoOnRevoke | None = None) -> datetime:
        """Revoke a key; it fails at its next use. Revoking twice keeps the first time. ``also`` adds rows
        to the revoking transaction (an event about it), and runs only if this call revokes the key."""
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            if also is not None:
                await also(session, key)
            await session.commit()
            self._on_keys_revoked()
        return key.revoked_at

    async def revoke_key(self, key_id: str, *, also: AlsoOnRevoke | None = None) -> datetime:
        """Revoke a key; it fails at its next use. Revoking twice keeps the first time."""
        async with self._sessions() as session:
            key = await session.get(ApiKey, key_id)
            if key is None:
                raise NotFound(f"no API key with id {key_id}; see pushgate key list TOPIC")
            return await self._revoke(session, key, also)

    async def revoke_topic_key(self, owner_id: str, topic_id: str, key_id: str) -> ApiKey:
        """Revoke a key of the user's topic; a key of another topic is reported like an unknown id."""
        async with self._sessions() as session:
            topic = await self._owned_topic(session, owner_id, topic_id)
            key = await session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.topic_id == topic.id))
            if key is None:
                raise NotFound(
                    f"topic {topic.name} has no API key with id {key_id}; GET /api/topics/{topic.id}/keys "
                    "lists them",
                    error="Key not found",
                )
            await self._revoke(session, key)
            return key  # type: ignore[no-any-return]
