"""Pushover's message API in the core's terms: its fields and limits, and its monthly quota.

The HTTP edge (``http_bridge/pushover.py``) collects the fields from the query, the body and the files and
renders answers; the rules are here, so another edge could speak Pushover too.

Fields (Pushover's names) and what they become in the ``PushRequest``:

- ``message`` (required, at most 1024 characters), ``title`` (250), ``sound``;
- ``url`` (512) is the click URL; ``url_title`` (100) labels it: the envelope carries it as a ``url``
  action whose label is the title (its first 64 characters, an action label's limit), so a receiver
  can show the link under its name;
- ``priority`` -2..2 as Pushover's scale (``pushover_priority``); 2 (emergency) needs ``retry`` (at least
  30 s) and ``expire`` (at most 10800 s), takes ``callback`` (the message's ``callback_url``) and
  ``tags``, and offers an ``ack`` action that acknowledges it (``gateway.emergency``);
- ``ttl`` as pushgate's ttl; ``html`` and ``monospace`` (0 or 1, not both), ``timestamp`` (Unix seconds)
  and ``device`` (comma-separated names) are checked as Pushover checks them but change nothing: pushgate
  sends every message to every receiver of its topic, as its text, timestamped when it was accepted.

An error names Pushover's field; ``error`` is the value Pushover puts under it (``invalid``, or ``cannot
be blank`` for a missing message).

The quota: Pushover counts messages per application per calendar month. Here a topic is the
application (all of its keys share the quota, so adding a key does not add messages), messages accepted
through the Pushover API count (an emergency message counts once, however often it is re-sent), and the
month is the calendar month in UTC (Pushover's resets at midnight US Central time).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.access import Access, Principal, TopicInfo, topic_info
from gateway.errors import PushgateError, Unauthorized, ValidationError
from gateway.request import PushRequest
from gateway.storage.models import Device, Message, Topic, utcnow
from gateway.targets import CHANNEL_OF_PLATFORM, DeviceTargets
from gateway.validation import pushover_priority

__all__ = [
    "EMERGENCY",
    "EXPIRE_MAX",
    "LIMITS",
    "RETRY_MIN",
    "SOURCE",
    "Applications",
    "EmergencySpec",
    "MonthlyQuota",
    "PushoverMessage",
    "QuotaExceeded",
    "QuotaState",
    "parse_message",
]

SOURCE = "pushover"
EMERGENCY = 2
RETRY_MIN = 30  # seconds: Pushover refuses to re-send more often
EXPIRE_MAX = 10800  # seconds (3 hours): Pushover's longest emergency
# Pushover's documented limits, in characters.
LIMITS = {"message": 1024, "title": 250, "url": 512, "url_title": 100}
ACK_ACTION = {"id": "ack", "label": "Acknowledge", "type": "button"}
_DEVICE = re.compile(r"[A-Za-z0-9_-]{1,25}")
_INTEGER = re.compile(r"-?[0-9]{1,12}")
# Pushover's license names for the platforms of pushgate's devices.
_LICENSES = {"android": "Android", "ios": "iOS", "web": "Desktop"}


class QuotaExceeded(PushgateError):
    """Raised when a topic has sent its ``[pushover] monthly_limit`` messages this month."""

    status = 429
    error = "Monthly limit reached"


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(field, message, error="invalid")


@dataclass(frozen=True, slots=True)
class EmergencySpec:
    retry: int
    expire: int
    tags: list[str]


@dataclass(frozen=True, slots=True)
class PushoverMessage:
    request: PushRequest
    emergency: EmergencySpec | None


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _invalid(name, f"{name} is invalid")
    value = str(value)
    limit = LIMITS.get(name)
    if limit is not None and len(value) > limit:
        raise _invalid(name, f"{name} cannot be longer than {limit} characters")
    return value


def _integer(fields: Mapping[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not isinstance(value, int | str) or not _INTEGER.fullmatch(text):
        raise _invalid(name, f"{name} must be a whole number")
    return int(text)


def _flag(fields: Mapping[str, Any], name: str) -> bool:
    value = _integer(fields, name)
    if value not in (None, 0, 1):
        raise _invalid(name, f"{name} must be 0 or 1")
    return value == 1


def parse_message(
    fields: Mapping[str, Any],
    *,
    topic: str,
    credential: str | None,
    client_addr: str | None,
    image_url: str | None = None,
) -> PushoverMessage:
    """Check Pushover's fields and build the core's request; raises ``ValidationError`` naming the field."""
    message = fields.get("message")
    if message is None or (isinstance(message, str) and not message.strip()):
        raise ValidationError("message", "message cannot be blank", error="cannot be blank")
    message = _text(fields, "message")
    title = _text(fields, "title")
    url = _text(fields, "url")
    url_title = _text(fields, "url_title")
    sound = _text(fields, "sound")
    priority = _integer(fields, "priority")
    if priority is not None and not -2 <= priority <= 2:
        raise _invalid("priority", "priority must be -2, -1, 0, 1 or 2")
    if _flag(fields, "html") and _flag(fields, "monospace"):
        raise _invalid("monospace", "html and monospace cannot both be set")
    timestamp = _integer(fields, "timestamp")
    if timestamp is not None and timestamp < 0:
        raise _invalid("timestamp", "timestamp must be a Unix timestamp")
    devices = _text(fields, "device")
    if devices is not None and not all(_DEVICE.fullmatch(d.strip()) for d in devices.split(",")):
        raise _invalid("device", "device name is not valid for user")
    ttl = _integer(fields, "ttl")
    if ttl is not None and ttl <= 0:
        raise _invalid("ttl", "ttl must be a positive number of seconds")

    actions: list[dict[str, Any]] = []
    emergency = None
    tags = fields.get("tags")
    if priority == EMERGENCY:
        retry = _integer(fields, "retry")
        expire = _integer(fields, "expire")
        if retry is None:
            raise _invalid("retry", "retry is required for emergency-priority messages")
        if retry < RETRY_MIN:
            raise _invalid("retry", f"retry must be at least {RETRY_MIN} seconds")
        if expire is None:
            raise _invalid("expire", "expire is required for emergency-priority messages")
        if not 0 < expire <= EXPIRE_MAX:
            raise _invalid("expire", f"expire must be at most {EXPIRE_MAX} seconds")
        if tags is not None and not isinstance(tags, str):
            raise _invalid("tags", "tags must be a comma-separated string")
        tag_list = [t.strip() for t in (tags or "").split(",") if t.strip()]
        emergency = EmergencySpec(retry, expire, tag_list)
        actions.append(dict(ACK_ACTION))
    if url and url_title:  # an action label holds 64 characters (the core's limit), a url_title 100
        actions.append({"id": "url", "label": url_title[:64], "type": "url", "url": url})
    request = PushRequest(
        topic=topic,
        message=message,
        source=SOURCE,
        title=title,
        priority=pushover_priority(priority or 0),
        tags=tags if emergency is not None else None,
        click_url=url,
        image_url=image_url,
        actions=actions or None,
        callback_url=fields.get("callback") if emergency is not None else None,
        sound=sound,
        ttl=ttl,
        credential=credential,
        client_addr=client_addr,
    )
    return PushoverMessage(request, emergency)


@dataclass(frozen=True, slots=True)
class QuotaState:
    """What ``X-Limit-App-Limit``, ``-Remaining`` and ``-Reset`` report (reset: Unix seconds)."""

    limit: int
    remaining: int
    reset: int


def _month(now: datetime) -> tuple[datetime, datetime]:
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    end = start.replace(month=start.month + 1)
    return start, end


class MonthlyQuota:
    """Messages sent per topic this month: counted from the stored messages once per topic and month,
    then in memory, so the check costs no query per push and survives a restart."""

    def __init__(
        self, sessions: async_sessionmaker[Any], limit: int, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._sessions = sessions
        self.limit = limit
        self._clock = clock
        self._month = _month(clock())[0]
        self._used: dict[str, int] = {}

    async def state(self, topic_id: str | None) -> QuotaState:
        """The topic's quota now (``None``, an unknown application: the full quota)."""
        start, end = self._roll()
        used = await self._count(topic_id, start) if topic_id else 0
        return QuotaState(self.limit, max(0, self.limit - used), int(end.timestamp()))

    async def take(self, topic_id: str) -> QuotaState:
        """Count one message, or raise ``QuotaExceeded``; ``give_back`` undoes it if the push fails."""
        start, end = self._roll()
        used = await self._count(topic_id, start)
        if used >= self.limit:
            raise QuotaExceeded(
                f"this application has sent its {self.limit} messages this month; "
                f"the quota resets on {end.strftime('%Y-%m-%d')} (UTC)"
            )
        self._used[topic_id] = used + 1
        return QuotaState(self.limit, self.limit - used - 1, int(end.timestamp()))

    def give_back(self, topic_id: str) -> None:
        if self._used.get(topic_id, 0) > 0:
            self._used[topic_id] -= 1

    def _roll(self) -> tuple[datetime, datetime]:
        start, end = _month(self._clock())
        if start != self._month:
            self._month, self._used = start, {}
        return start, end

    async def _count(self, topic_id: str, start: datetime) -> int:
        if topic_id not in self._used:
            async with self._sessions() as session:
                counted = await session.scalar(
                    select(func.count(Message.id)).where(
                        Message.topic_id == topic_id, Message.source == SOURCE, Message.created_at >= start
                    )
                )
            self._used.setdefault(topic_id, counted or 0)
        return self._used[topic_id]


class Applications:
    """Pushover's ``token`` and ``user``: the token is one of a topic's API keys (the topic is the
    "application"), the user is that topic's name; a user token is not an application token."""

    def __init__(self, sessions: async_sessionmaker[Any], access: Access, targets: DeviceTargets) -> None:
        self._sessions = sessions
        self._access = access
        self._targets = targets

    async def resolve(
        self, token: Any, user: Any = None, *, user_required: bool = False
    ) -> tuple[Principal, TopicInfo]:
        """The key and its topic; ``ValidationError`` naming ``token`` or ``user`` otherwise."""
        bad_token = _invalid("token", "application token is invalid")
        if not isinstance(token, str) or not token.strip():
            raise bad_token
        try:
            principal = await self._access.authenticate(token.strip())
        except Unauthorized:
            raise bad_token from None
        if principal.kind != "key" or principal.topic_id is None:
            raise bad_token
        async with self._sessions() as session:
            topic = await session.get(Topic, principal.topic_id)
        if topic is None:
            raise bad_token
        if (user is None or user == "") and not user_required:
            return principal, topic_info(topic)
        if not isinstance(user, str) or user.strip() != topic.name:
            raise _invalid("user", "user identifier is invalid")
        return principal, topic_info(topic)

    async def devices(self, topic: TopicInfo) -> list[tuple[str, str]]:
        """(name, platform) of the registered devices a message on ``topic`` reaches."""
        ids = [t.device_id for t in self._targets.for_topic(topic, set(CHANNEL_OF_PLATFORM.values()))]
        if not ids:
            return []
        async with self._sessions() as session:
            rows = await session.execute(
                select(Device.id, Device.device_name, Device.platform).where(Device.id.in_(ids))
            )
            return sorted((name or device_id[:8], platform) for device_id, name, platform in rows.all())

    @staticmethod
    def licenses(devices: list[tuple[str, str]]) -> list[str]:
        return sorted({_LICENSES.get(platform, platform) for _, platform in devices})
