"""Instapush's model on pushgate's: apps are topics, app secrets are topic keys, events are stored patterns.

- An **app** is a private topic owned by the user whose token (``x-instapush-token``) is presented.
  ``appID`` is the topic's id, ``appSecret`` one of its API keys. ``apps/add`` makes the topic (named after
  the title: characters a topic name cannot hold become ``-``, and a taken name gets a short suffix; the
  title itself is kept as the description) and a key labelled ``instapush``, and answers the key: the only
  time it is shown. ``apps/list`` lists every topic the user owns (``title``: its description, or its name
  when it has none). Keys are stored as hashes, so it cannot show a secret again: ``appSecret`` is the
  newest active key masked to its public part (``pk_<lookup>_********``, enough to tell which key it is;
  empty when the topic has none). A new secret comes from ``POST /api/topics/<id>/keys``; listing never
  makes one.
- An **event** (``events/add``) has a title, unique within its app (adding it again replaces its trackers
  and pattern, so a setup script may run twice), the tracker names a post must give, and a message
  pattern such as ``{email} has signed up from {country}``. Every ``{name}`` in the pattern must be a
  tracker.
- A **post** renders the event's pattern with the given trackers and publishes it to the app's topic
  through the one publish pipeline (title: the event's title, source ``instapush``). Rendering only
  replaces ``{name}`` by the tracker's text: no format-string machinery, so ``{0.__class__}`` or
  ``{email!r}`` stay as they are. Every tracker the event declares must be given; extra ones are ignored.

Errors are the core's typed errors; the 401s carry Instapush's own messages ("Invalid User Token",
"Wrong APPID or APPSECRET"), which the edge renders as ``{"msg", "error": true, "status"}``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway import credentials
from gateway.access import Access, Principal, TopicInfo
from gateway.admin import Admin
from gateway.config import LimitsConfig
from gateway.errors import Conflict, NotFound, Unauthorized, ValidationError
from gateway.ids import new_id
from gateway.request import PushRequest, PushResult
from gateway.storage.models import ApiKey, InstapushEvent, Topic, utcnow

__all__ = [
    "BAD_APP",
    "BAD_TOKEN",
    "EVENT_TITLE_MAX_CHARS",
    "TRACKERS_MAX",
    "App",
    "AppCreated",
    "Instapush",
    "render",
]

BAD_TOKEN = "Invalid User Token"  # Instapush's documented messages, word for word
BAD_APP = "Wrong APPID or APPSECRET"
EVENT_TITLE_MAX_CHARS = 64  # an event name, as a topic name
APP_TITLE_MAX_CHARS = 250  # as a message title
TRACKERS_MAX = 20  # more fields than a notification line holds
TRACKER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.-]{1,64})\}")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_KEY_LABEL = "instapush"

Publish = Callable[[PushRequest, Principal], Awaitable[PushResult]]


@dataclass(frozen=True, slots=True)
class App:
    """An authenticated app: the key's principal and its topic."""

    principal: Principal
    topic: TopicInfo


@dataclass(frozen=True, slots=True)
class AppCreated:
    id: str
    secret: str


def render(pattern: str, trackers: Mapping[str, str]) -> str:
    """Replace each ``{name}`` of ``pattern`` with ``trackers[name]``; other text, braces included, stays."""
    return _PLACEHOLDER.sub(lambda m: trackers.get(m.group(1), m.group(0)), pattern)


def _text(value: Any, field: str, max_chars: int, example: str) -> str:
    if value is None or value == "":
        raise ValidationError(field, f"{field} is required, e.g. {example}")
    if not isinstance(value, str):
        raise ValidationError(field, f"{field} must be a string, e.g. {example}")
    if not value.strip():
        raise ValidationError(field, f"{field} cannot be blank")
    if len(value) > max_chars:
        raise ValidationError(field, f"{field} is {len(value)} characters; the limit is {max_chars}")
    return value


def _tracker_names(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValidationError("trackers", 'trackers must be a list of names, e.g. ["email", "country"]')
    if len(value) > TRACKERS_MAX:
        raise ValidationError("trackers", f"{len(value)} trackers; the limit is {TRACKERS_MAX}")
    for name in value:
        if not TRACKER_NAME.fullmatch(name):
            raise ValidationError(
                "trackers", f"tracker {name!r}: a name is 1-64 characters of A-Z, a-z, 0-9, '_', '.' and '-'"
            )
    return list(dict.fromkeys(value))


def _tracker_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise ValidationError("trackers", f"tracker {name!r} must be text or a number")


def _app_name(title: str) -> str:
    """A topic name for an app title: what a topic name cannot hold becomes ``-``; never a key's shape."""
    name = _NOT_IN_NAME.sub("-", title).strip("-")[:57] or "app"
    return f"app-{name}"[:57] if credentials.is_key(name) else name


class Instapush:
    def __init__(
        self,
        sessions: async_sessionmaker[Any],
        access: Access,
        admin: Admin,
        publish: Publish,
        limits: LimitsConfig,
    ) -> None:
        self._sessions = sessions
        self._access = access
        self._admin = admin
        self._publish = publish
        self._limits = limits

    # -- apps (a user token) -------------------------------------------------------------------------

    async def user(self, token: str | None) -> str:
        """The id of the user whose token this is; anything else is 401 "Invalid User Token"."""
        try:
            who = await self._access.authenticate(token) if token else None
        except Unauthorized:
            who = None
        if who is None or who.kind != "user" or not who.user_id:
            raise Unauthorized(BAD_TOKEN, error="Invalid token")
        return who.user_id

    async def apps(self, owner_id: str) -> list[dict[str, str]]:
        """The user's topics as Instapush apps, by name; ``appSecret`` masked (see the module docstring)."""
        async with self._sessions() as session:
            topics = list(
                await session.scalars(select(Topic).where(Topic.owner_id == owner_id).order_by(Topic.name))
            )
            if not topics:
                return []
            keys = await session.scalars(
                select(ApiKey)
                .where(ApiKey.topic_id.in_([t.id for t in topics]), ApiKey.revoked_at.is_(None))
                .order_by(ApiKey.created_at, ApiKey.id)
            )
            newest = {key.topic_id: key.lookup for key in keys}
        return [
            {
                "title": topic.description or topic.name,
                "appID": topic.id,
                "appSecret": f"pk_{newest[topic.id]}_********" if topic.id in newest else "",
            }
            for topic in topics
        ]

    async def add_app(self, owner_id: str, fields: Mapping[str, Any]) -> AppCreated:
        title = _text(fields.get("title"), "title", APP_TITLE_MAX_CHARS, '{"title": "My app"}')
        name = _app_name(title)
        for attempt in range(4):
            try:
                topic = await self._admin.create_topic(
                    name, private=True, description=title, owner_id=owner_id
                )
                break
            except Conflict:  # the name is taken (topic names are global): add a random suffix
                if attempt == 3:
                    raise
                name = f"{_app_name(title)}-{secrets.token_hex(3)}"
        issued = await self._admin.create_topic_key(owner_id, topic.id, {"label": _KEY_LABEL})
        return AppCreated(topic.id, issued.secret)

    # -- events and posts (an app id and secret) -----------------------------------------------------

    async def app(self, app_id: str | None, secret: str | None) -> App:
        """The app whose id and secret (one of its topic keys) these are; else 401 ``BAD_APP``."""
        if not app_id or not secret:
            raise Unauthorized(BAD_APP)
        try:
            principal, topic = await self._access.key_topic(secret)
        except Unauthorized:
            raise Unauthorized(BAD_APP) from None
        if topic.id != app_id:
            raise Unauthorized(BAD_APP)
        return App(principal, topic)

    async def events(self, app: App) -> list[dict[str, Any]]:
        topic = app.topic
        async with self._sessions() as session:
            rows = await session.scalars(
                select(InstapushEvent)
                .where(InstapushEvent.topic_id == topic.id)
                .order_by(InstapushEvent.created_at, InstapushEvent.id)
            )
            return [{"title": event.title, "trackers": list(event.trackers)} for event in rows]

    async def add_event(self, app: App, fields: Mapping[str, Any]) -> None:
        """Store the event, or replace the trackers and pattern of the app's event of that title."""
        topic = app.topic
        title = _text(fields.get("title"), "title", EVENT_TITLE_MAX_CHARS, '{"title": "signups"}')
        trackers = _tracker_names(fields.get("trackers"))
        pattern = _text(
            fields.get("message"),
            "message",
            self._limits.message_max_bytes,
            '{"message": "{email} has signed up from {country}"}',
        )
        unknown = [name for name in _PLACEHOLDER.findall(pattern) if name not in trackers]
        if unknown:
            raise ValidationError(
                "message", f"the pattern uses {{{unknown[0]}}}, which is not one of the trackers {trackers}"
            )
        now = utcnow()
        async with self._sessions() as session:
            event = await session.scalar(
                select(InstapushEvent).where(
                    InstapushEvent.topic_id == topic.id, InstapushEvent.title == title
                )
            )
            if event is None:
                session.add(
                    InstapushEvent(
                        id=new_id(),
                        topic_id=topic.id,
                        title=title,
                        trackers=trackers,
                        message=pattern,
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                event.trackers, event.message, event.updated_at = trackers, pattern, now
            await session.commit()

    async def post(self, app: App, fields: Mapping[str, Any], client_addr: str | None) -> PushResult:
        """Render the event's pattern with the trackers and publish it to the app's topic."""
        principal, topic = app.principal, app.topic
        name = _text(fields.get("event"), "event", EVENT_TITLE_MAX_CHARS, '{"event": "signups"}')
        given = fields.get("trackers")
        if not isinstance(given, dict):
            raise ValidationError("trackers", 'trackers must be an object, e.g. {"email": "a@example.com"}')
        async with self._sessions() as session:
            event = await session.scalar(
                select(InstapushEvent).where(
                    InstapushEvent.topic_id == topic.id, InstapushEvent.title == name
                )
            )
        if event is None:
            raise NotFound(
                f"Event {name!r} not found; GET /v1/events/list lists this app's events",
                error="Event not found",
            )
        missing = [tracker for tracker in event.trackers if given.get(tracker) is None]
        if missing:
            raise ValidationError("trackers", f"Missing tracker(s): {', '.join(missing)}")
        values = {tracker: _tracker_value(tracker, given[tracker]) for tracker in event.trackers}
        req = PushRequest(
            topic=topic.name,
            title=event.title,
            message=render(event.message, values),
            source="instapush",
            client_addr=client_addr,
        )
        return await self._publish(req, principal)
