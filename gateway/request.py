"""The one request type every edge builds: HTTP, MQTT and the compatible APIs all fill a ``PushRequest``.

Fields hold what the client sent, untyped where the client controls the type (JSON), so validation in
``gateway.validation`` can name the field that is wrong instead of an edge guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.errors import ValidationError
from gateway.ratelimit import RateState

__all__ = ["PRIORITIES", "PushRequest", "PushResult", "ValidMessage"]

PRIORITIES = ("lowest", "low", "normal", "high", "urgent")


@dataclass(slots=True)
class PushRequest:
    topic: str
    message: Any
    source: str  # "http", "mqtt", "pushover", ...
    title: Any = None
    priority: Any = None
    tags: Any = None
    click_url: Any = None
    icon_url: Any = None
    image_url: Any = None
    actions: Any = None
    callback_url: Any = None
    sound: Any = None
    ttl: Any = None
    credential: str | None = None  # API key or user token as presented, never logged
    client_addr: str | None = None

    @classmethod
    def from_fields(
        cls,
        topic: str,
        body: Any,
        *,
        source: str,
        credential: str | None = None,
        client_addr: str | None = None,
    ) -> PushRequest:
        """Build from a JSON object or form fields (the HTTP JSON body's names); unknown names are ignored."""
        if not isinstance(body, dict):
            raise ValidationError("body", 'the JSON body must be an object with at least "message"')
        return cls(
            topic=topic,
            message=body.get("message"),
            source=source,
            title=body.get("title"),
            priority=body.get("priority"),
            tags=body.get("tags"),
            click_url=body.get("click_url", body.get("click")),
            icon_url=body.get("icon_url", body.get("icon")),
            image_url=body.get("image_url"),
            actions=body.get("actions"),
            callback_url=body.get("callback_url"),
            sound=body.get("sound"),
            ttl=body.get("ttl"),
            credential=credential,
            client_addr=client_addr,
        )


@dataclass(slots=True)
class ValidMessage:
    """A request that passed validation: every field has its final type. Made per push, so not ``frozen``
    (like ``gateway.channels.Job``); nothing changes it after validation."""

    title: str
    message: str
    priority: str
    tags: list[str] = field(default_factory=list)
    click_url: str | None = None
    icon_url: str | None = None
    image_url: str | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    callback_url: str | None = None
    sound: str | None = None
    ttl: int | None = None


@dataclass(slots=True)
class PushResult:
    """What an edge answers once the message is durably stored. Made per push, so not ``frozen``."""

    id: str
    receipt_id: str
    topic: str
    timestamp: datetime
    subscribers: int
    rate: RateState | None = None  # the tighter rate-limit bucket after this push; None when limits are off

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": True,
            "id": self.id,
            "receipt_id": self.receipt_id,
            "topic": self.topic,
            "timestamp": self.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "subscribers": self.subscribers,
        }
