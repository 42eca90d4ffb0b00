"""Who is asking, and what they may do: credentials to principals, and the topic access rules.

The rules, shared by every edge (the MQTT ACL is these rules applied to MQTT topics):
- a topic API key grants exactly its own topic, to publish and to read, public or private;
- a user token grants the topics its user owns, and every public topic;
- anonymous clients may publish to and read public topics only;
- the gateway itself (``SYSTEM``: notices such as an automatic key revocation) may publish anywhere; no
  edge can present it.
An unknown or revoked credential is refused outright (401), even on a public topic, so a typo in a
key is never silently treated as anonymous. Keys are not cached: a revoked key fails at its next use.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway import credentials
from gateway.errors import Forbidden, Unauthorized
from gateway.storage.models import ApiKey, Topic, User, UserToken, utcnow

__all__ = ["ANONYMOUS", "SYSTEM", "Access", "Principal", "TopicInfo"]

# A key's last-used time is written at most this often, so a busy device does not cost a write per push.
LAST_USED_RESOLUTION = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Literal["anonymous", "key", "user", "system"]
    user_id: str | None = None
    topic_id: str | None = None
    key_id: str | None = None
    label: str = ""  # key label or user name: safe to log

    def __str__(self) -> str:
        return f"{self.kind}:{self.label}" if self.label else self.kind


ANONYMOUS = Principal("anonymous")
SYSTEM = Principal("system", label="pushgate")


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """The few topic fields access decisions need; cheap to cache and to pass around."""

    id: str
    name: str
    is_private: bool
    owner_id: str | None


class Access:
    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self._sessions = sessions
        self._used: dict[tuple[str, str], datetime] = {}
        self._used_flushed: dict[str, float] = {}

    async def authenticate(self, presented: str | None) -> Principal:
        """Resolve a presented credential; ``None``/empty is anonymous; anything else must be valid."""
        if not presented:
            return ANONYMOUS
        cred = credentials.parse(presented)
        if cred is None:
            raise Unauthorized("the API key or token is not one pushgate issued; check for a typo")
        async with self._sessions() as session:
            if cred.kind == credentials.KEY_PREFIX:
                key = await session.scalar(select(ApiKey).where(ApiKey.lookup == cred.lookup))
                return self._key_principal(key, presented)
            row = await session.execute(
                select(UserToken, User.name).join(User).where(UserToken.lookup == cred.lookup)
            )
            found = row.first()
            if found is None or not credentials.verify(presented, found[0].token_hash):
                raise Unauthorized("the user token is unknown", error="Invalid token")
            token, user_name = found
            if token.revoked_at is not None:
                raise Unauthorized("the user token was revoked", error="Invalid token")
            self._mark_used("token", token.id)
            return Principal("user", user_id=token.user_id, label=user_name)

    async def key_topic(self, presented: str | None) -> tuple[Principal, TopicInfo]:
        """The topic an API key belongs to, with the key's principal: for APIs where the key alone names
        the channel (PushStaq's ``/api/push/``, Instapush's app secret). Anything but a valid key is 401."""
        if not presented:
            raise Unauthorized(
                "send the channel's API key: an x-api-key or api-key header, or the path /api/push/<key>/"
            )
        cred = credentials.parse(presented)
        if cred is None:
            raise Unauthorized("the API key is not one pushgate issued; check for a typo")
        if cred.kind != credentials.KEY_PREFIX:
            raise Unauthorized(
                "a user token names no channel: send a topic's API key, or push to /api/push/<topic>"
            )
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, Topic)
                    .join(Topic, Topic.id == ApiKey.topic_id)
                    .where(ApiKey.lookup == cred.lookup)
                )
            ).first()
        if row is None:
            raise _unknown_key()
        return self._key_principal(row[0], cred.value), topic_info(row[1])

    def _key_principal(self, key: ApiKey | None, presented: str) -> Principal:
        """The principal of a key row found by its lookup; unknown, wrong or revoked is 401."""
        if key is None or not credentials.verify(presented, key.key_hash):
            raise _unknown_key()
        if key.revoked_at is not None:
            raise Unauthorized("the API key was revoked; create a new one")
        self._mark_used("key", key.id)
        return Principal("key", topic_id=key.topic_id, key_id=key.id, label=key.label or key.id[:8])

    @staticmethod
    def may_access(principal: Principal, topic: TopicInfo) -> bool:
        """Publish and read follow the same rule (see the module docstring)."""
        if principal.kind == "system":
            return True
        if principal.kind == "key":
            return principal.topic_id == topic.id
        if not topic.is_private:
            return True
        return principal.kind == "user" and principal.user_id == topic.owner_id

    def check(self, principal: Principal, topic: TopicInfo) -> None:
        if self.may_access(principal, topic):
            return
        if principal.kind == "anonymous":
            raise Unauthorized(
                f'topic "{topic.name}" is private: send one of its API keys '
                "(Authorization: Bearer <key> or x-api-key: <key>)"
            )
        raise Forbidden(f'this credential does not grant topic "{topic.name}"')

    async def revoked_keys(self, key_ids: Collection[str]) -> set[str]:
        """Which of ``key_ids`` are revoked (or deleted): one query, for the broker's session audit."""
        if not key_ids:
            return set()
        async with self._sessions() as session:
            live = set(
                await session.scalars(
                    select(ApiKey.id).where(ApiKey.id.in_(list(key_ids)), ApiKey.revoked_at.is_(None))
                )
            )
        return set(key_ids) - live

    def _mark_used(self, kind: str, row_id: str) -> None:
        now = time.monotonic()
        if now - self._used_flushed.get(row_id, -LAST_USED_RESOLUTION) >= LAST_USED_RESOLUTION:
            self._used[(kind, row_id)] = utcnow()

    async def flush_last_used(self) -> None:
        """Write pending last-used times in one transaction (called by the maintenance loop)."""
        if not self._used:
            return
        pending, self._used = self._used, {}
        now = time.monotonic()
        async with self._sessions() as session:
            for (kind, row_id), when in pending.items():
                model = ApiKey if kind == "key" else UserToken
                await session.execute(update(model).where(model.id == row_id).values(last_used_at=when))
                self._used_flushed[row_id] = now
            await session.commit()


def _unknown_key() -> Unauthorized:
    return Unauthorized("the API key is unknown; create one with 'pushgate key create TOPIC'")


def topic_info(topic: Topic) -> TopicInfo:
    return TopicInfo(topic.id, topic.name, topic.is_private, topic.owner_id)
