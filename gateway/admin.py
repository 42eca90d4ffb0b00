"""Management of users, tokens, topics and keys: used by the CLI now and by the /api management routes.

Secrets are returned once, at creation, and only their hashes are stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway import credentials
from gateway.errors import Conflict, NotFound, ValidationError
from gateway.ids import new_id
from gateway.storage.models import ApiKey, Topic, User, UserToken, utcnow
from gateway.topics import check_topic_name

__all__ = ["Admin", "Created"]


@dataclass(frozen=True, slots=True)
class Created:
    """A new row and the secret that belongs to it, shown to the person once."""

    id: str
    secret: str


class Admin:
    def __init__(
        self, sessions: async_sessionmaker[Any], on_topic_change: Callable[[str], None] | None = None
    ) -> None:
        self._sessions = sessions
        self._on_topic_change = on_topic_change or (lambda _name: None)

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

    async def create_topic(
        self, name: str, *, private: bool = False, description: str = "", owner: str | None = None
    ) -> Topic:
        check_topic_name(name)
        try:
            async with self._sessions() as session:
                owner_id = await self._user_id(session, owner) if owner else None
                topic = Topic(
                    id=new_id(), name=name, is_private=private, description=description, owner_id=owner_id
                )
                session.add(topic)
                await session.commit()
        except IntegrityError as exc:
            raise Conflict(f'topic "{name}" exists already') from exc
        self._on_topic_change(name)
        return topic

    async def list_topics(self) -> list[tuple[Topic, int]]:
        """Every topic with its number of active keys, by name."""
        active = func.count(ApiKey.id).filter(ApiKey.revoked_at.is_(None))
        async with self._sessions() as session:
            rows = await session.execute(
                select(Topic, active).outerjoin(ApiKey).group_by(Topic.id).order_by(Topic.name)
            )
            return [(topic, count) for topic, count in rows.all()]

    async def _topic(self, session: Any, name: str) -> Topic:
        topic = await session.scalar(select(Topic).where(Topic.name == name))
        if topic is None:
            raise NotFound(f'topic "{name}" does not exist; create it with pushgate topic create {name}')
        return topic  # type: ignore[no-any-return]

    async def create_key(self, topic_name: str, *, label: str = "") -> Created:
        cred = credentials.generate(credentials.KEY_PREFIX)
        async with self._sessions() as session:
            topic = await self._topic(session, topic_name)
            key = ApiKey(
                id=new_id(),
                topic_id=topic.id,
                lookup=cred.lookup,
                key_hash=credentials.hash_secret(cred.value),
                label=label,
            )
            session.add(key)
            await session.commit()
        return Created(key.id, cred.value)

    async def list_keys(self, topic_name: str) -> list[ApiKey]:
        async with self._sessions() as session:
            topic = await self._topic(session, topic_name)
            rows = await session.scalars(
                select(ApiKey).where(ApiKey.topic_id == topic.id).order_by(ApiKey.created_at)
            )
            return list(rows)

    async def revoke_key(self, key_id: str) -> datetime:
        """Revoke a key; it fails at its next use. Revoking twice keeps the first time."""
        async with self._sessions() as session:
            key = await session.get(ApiKey, key_id)
            if key is None:
                raise NotFound(f"no API key with id {key_id}; see pushgate key list TOPIC")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
                await session.commit()
            return key.revoked_at
