"""Topic look-up by name, with a short-lived cache so the MQTT ACL does not query per delivered message.

Changes made through this process invalidate the entry at once; changes made by another process (the CLI
against a running server) are seen within ``cache_seconds``. Keys are never cached (see ``access``).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway import credentials
from gateway.access import TopicInfo, topic_info
from gateway.errors import NotFound, ValidationError
from gateway.ids import new_id
from gateway.storage.models import Topic

__all__ = ["TOPIC_NAME", "TopicDirectory", "check_topic_name", "valid_topic_name"]

TOPIC_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def valid_topic_name(name: str) -> bool:
    """The name rule, plus: never the shape of an API key, which ``/api/push/<key>/`` reads as a key."""
    return TOPIC_NAME.fullmatch(name) is not None and not credentials.is_key(name)


def check_topic_name(name: str) -> str:
    if not TOPIC_NAME.fullmatch(name):
        raise ValidationError("topic", "a topic name is 1-64 characters of A-Z, a-z, 0-9, '_' and '-'")
    if credentials.is_key(name):
        raise ValidationError(
            "topic", "a topic name may not look like an API key (pk_<12 characters>_...): choose another"
        )
    return name


class TopicDirectory:
    def __init__(self, sessions: async_sessionmaker[Any], *, auto_create: bool, cache_seconds: float) -> None:
        self._sessions = sessions
        self._auto_create = auto_create
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, TopicInfo]] = {}
        # One database read per name at a time: when an entry expires under load, the callers that arrive
        # meanwhile wait for that read instead of each taking a connection from the pool.
        self._loading: dict[str, asyncio.Future[TopicInfo | None]] = {}

    def invalidate(self, name: str | None = None) -> None:
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)

    def cached(self, name: str) -> TopicInfo | None:
        """The topic if its cache entry is fresh, without waiting; else ``None`` (call ``find``)."""
        hit = self._cache.get(name)
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        return None

    async def find(self, name: str) -> TopicInfo | None:
        hit = self.cached(name)
        if hit is not None:
            return hit
        now = time.monotonic()
        loading = self._loading.get(name)
        if loading is not None:
            return await asyncio.shield(loading)
        loading = asyncio.get_running_loop().create_future()
        self._loading[name] = loading
        try:
            info = await self._load(name, now)
        except asyncio.CancelledError:
            loading.cancel()
            raise
        except Exception as exc:
            loading.set_exception(exc)
            loading.exception()  # marked retrieved: with nobody waiting, asyncio must not log it
            raise
        else:
            loading.set_result(info)
        finally:
            self._loading.pop(name, None)
        return info

    async def _load(self, name: str, now: float) -> TopicInfo | None:
        async with self._sessions() as session:
            topic = await session.scalar(select(Topic).where(Topic.name == name))
        if topic is None:
            self._cache.pop(name, None)
            return None
        info = topic_info(topic)
        self._cache[name] = (now, info)
        return info

    async def get(self, name: str) -> TopicInfo:
        """The topic, created public on first use when ``auto_create`` is on; else ``NotFound``."""
        info = await self.find(name)
        if info is not None:
            return info
        if not valid_topic_name(name):
            raise NotFound(f'"{name}" is not a valid topic name', error=f'Topic "{name}" not found')
        if not self._auto_create:
            raise NotFound(
                f"create the topic first: pushgate topic create {name}", error=f'Topic "{name}" not found'
            )
        try:
            async with self._sessions() as session:
                session.add(Topic(id=new_id(), name=name))
                await session.commit()
        except IntegrityError:
            pass  # created concurrently: fine, read it back
        info = await self.find(name)
        assert info is not None
        return info
