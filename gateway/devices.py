"""Devices: the push targets that apps (Expo push tokens) and browsers (Web Push subscriptions) register.

Used by ``POST/GET /api/devices`` and ``DELETE /api/devices/<id>``; later read by the Expo and Web Push
channels. Every method acts for one user (a user token): a device of another user answers exactly as an
unknown id does (``NotFound``), so ids cannot be probed.

Registration takes the request fields as a mapping and checks them here, each error naming its field:

- ``platform`` (required): ``ios``, ``android`` or ``web``.
- ``push_token`` (ios, android; required there, refused for web): an Expo push token,
  ``ExponentPushToken[...]`` or ``ExpoPushToken[...]``.
- ``subscription`` (web; required there, refused for ios and android): the browser's
  ``PushSubscription.toJSON()``, ``{"endpoint", "expirationTime", "keys": {"p256dh", "auth"}}``. The
  endpoint is an https URL; ``p256dh`` is base64url of an uncompressed P-256 point (65 bytes, 0x04, on the
  curve) and ``auth`` base64url of 16 bytes, with or without ``=`` padding. The subscription is the
  browser's object, taken as the browser makes it: its other members (``expirationTime``; whatever a
  browser adds later) are ignored. An expired subscription shows when the push service answers 404/410.
- ``device_name``, ``app_version``, ``external_id`` (strings), ``tags`` (a list of strings) and
  ``topics`` (a list of topic names the user may access: the user's own and public ones; an empty list,
  the default, means every topic the user owns).

Unknown fields are refused, so a typo cannot silently drop a setting. The read-only fields of the answer
(``id``, ``created_at``, ``last_seen_at``, ``token_hint``) are ignored; ``status`` is refused, as pushgate
sets it (a registration makes a device active; the delivery channels mark it expired or bounced).

A push token, and a Web Push endpoint, is unique per user: registering it again (an app does on every
start) updates that device instead of adding one, and the answer says which happened (``created``). The
fields given replace the stored ones, the fields left out keep theirs; ``last_seen_at`` becomes now and
``status`` active again. Uniqueness is per user, not global, so another user registering the same token
gets a device of their own and can never take over, or learn of, someone else's.

Answers never carry the token, the endpoint or the keys: each is a capability to push to the device.
``token_hint`` (``ExponentPushToken[...wxyz]``, ``https://fcm.googleapis.com/...wxyz``) lets a person
tell devices apart.

Topic access is checked at registration only. A topic can turn private or be deleted (and its name taken
by another user) later, so whoever delivers to a device must check ``Access.may_access`` again at send
time. Topics are kept by name, as MQTT and ntfy subscriptions are: a renamed topic drops out of the lists
that named it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.access import Access, Principal, topic_info
from gateway.envelope import iso
from gateway.errors import Unauthorized, ValidationError
from gateway.ids import new_id
from gateway.storage.models import Device, Topic, utcnow
from gateway.storage.owned import owned
from gateway.targets import DeviceTargets
from gateway.topics import check_topic_name

__all__ = [
    "APP_VERSION_MAX_CHARS",
    "DEVICE_NAME_MAX_CHARS",
    "ENDPOINT_MAX_CHARS",
    "EXPO_PLATFORMS",
    "EXTERNAL_ID_MAX_CHARS",
    "PLATFORMS",
    "PUSH_TOKEN_MAX_CHARS",
    "STATUSES",
    "TAGS_MAX",
    "TAG_MAX_CHARS",
    "TOPICS_MAX",
    "Devices",
    "Registered",
    "Registration",
    "WebPushSubscription",
    "device_dict",
    "parse_registration",
    "token_hint",
]

log = logging.getLogger(__name__)

PLATFORMS = ("ios", "android", "web")
EXPO_PLATFORMS = ("ios", "android")
STATUSES = ("active", "unsubscribed", "expired", "bounced")

# The limits are the widths of the devices columns (gateway.storage.models.Device).
PUSH_TOKEN_MAX_CHARS = 255  # Expo tokens are about 41 characters
ENDPOINT_MAX_CHARS = 2048  # push services use a few hundred; 2048 still fits a unique B-tree index
DEVICE_NAME_MAX_CHARS = 100  # "Vincent's iPhone"
APP_VERSION_MAX_CHARS = 64  # "1.1.1 (build 412)"
EXTERNAL_ID_MAX_CHARS = 255  # the caller's own user or install id
# A device is tagged for targeting (Pushary's subscriber tags), not described: a handful of short words.
TAGS_MAX = 20
TAG_MAX_CHARS = 64
# More topics than one person owns in practice; the list is checked against the database at registration.
TOPICS_MAX = 100

_FIELDS = (
    "platform",
    "push_token",
    "subscription",
    "device_name",
    "app_version",
    "external_id",
    "tags",
    "topics",
)
_READ_ONLY = frozenset({"id", "created_at", "last_seen_at", "token_hint"})

_EXPO_TOKEN = re.compile(r"(ExponentPushToken|ExpoPushToken)\[([^\[\]\s]+)\]")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")

# NIST P-256 (secp256r1): y^2 = x^3 - 3x + b over GF(p). Web Push encrypts to this curve (RFC 8291).
_P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
_P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


@dataclass(frozen=True, slots=True)
class WebPushSubscription:
    """A browser's subscription; the keys are base64url without padding, as browsers send them."""

    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True, slots=True)
class Registration:
    """A validated ``POST /api/devices``: the target, and the optional fields that were given."""

    platform: str
    push_token: str | None = None
    subscription: WebPushSubscription | None = None
    given: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Registered:
    """The device as the API shows it, and whether the registration created it (else it updated it)."""

    device: dict[str, Any]
    created: bool


def parse_registration(fields: Mapping[str, Any]) -> Registration:
    """Check the fields of a registration (no I/O; the topics' existence is checked by ``Devices``)."""
    for name in fields:
        if name == "status":
            raise ValidationError(
                "status",
                "status is set by pushgate: registering makes a device active; "
                "DELETE /api/devices/<id> removes one",
            )
        if name not in _FIELDS and name not in _READ_ONLY:
            raise ValidationError(name, f'unknown field "{name}"; the fields are {", ".join(_FIELDS)}')
    platform = fields.get("platform")
    if platform is None:
        raise ValidationError(
            "platform",
            'platform is required: ios, android or web, e.g. {"platform": "ios", "push_token": ...}',
        )
    if platform not in PLATFORMS:
        raise ValidationError("platform", f"platform must be one of {', '.join(PLATFORMS)}")

    push_token = fields.get("push_token")
    subscription = fields.get("subscription")
    if platform == "web":
        if push_token is not None:
            raise ValidationError(
                "push_token", "a web device registers its Web Push subscription, not a push_token"
            )
        subscription = _subscription(subscription)
    else:
        if subscription is not None:
            raise ValidationError(
                "subscription", f"{platform} devices register an Expo push_token; subscription is for web"
            )
        push_token = _push_token(push_token)

    given: dict[str, Any] = {}
    if "device_name" in fields:
        given["device_name"] = _text(fields["device_name"], "device_name", DEVICE_NAME_MAX_CHARS)
    if "app_version" in fields:
        given["app_version"] = _text(fields["app_version"], "app_version", APP_VERSION_MAX_CHARS)
    if "external_id" in fields:
        given["external_id"] = _text(fields["external_id"], "external_id", EXTERNAL_ID_MAX_CHARS) or None
    if "tags" in fields:
        given["tags"] = _tags(fields["tags"])
    if "topics" in fields:
        given["topics"] = _topics(fields["topics"])
    return Registration(platform, push_token, subscription, given)


def _push_token(value: Any) -> str:
    if value is None:
        raise ValidationError(
            "push_token",
            "push_token is required for ios and android: the app's Expo push token, ExponentPushToken[...]",
        )
    if not isinstance(value, str):
        raise ValidationError("push_token", "push_token must be a string, ExponentPushToken[...]")
    if len(value) > PUSH_TOKEN_MAX_CHARS:
        raise ValidationError(
            "push_token", f"push_token is {len(value)} characters; the limit is {PUSH_TOKEN_MAX_CHARS}"
        )
    if not _EXPO_TOKEN.fullmatch(value):
        raise ValidationError(
            "push_token",
            "push_token must be an Expo push token, ExponentPushToken[...] or ExpoPushToken[...], "
            "as getExpoPushTokenAsync() returns it",
        )
    return value


def _subscription(value: Any) -> WebPushSubscription:
    shape = '{"endpoint": "https://...", "keys": {"p256dh": "...", "auth": "..."}}'
    if value is None:
        raise ValidationError(
            "subscription",
            f"subscription is required for web: the browser's PushSubscription as JSON, {shape}",
        )
    if not isinstance(value, dict):
        raise ValidationError(
            "subscription", f"subscription must be the browser's PushSubscription as a JSON object, {shape}"
        )
    endpoint = _endpoint(value.get("endpoint"))
    keys = value.get("keys")
    if not isinstance(keys, dict):
        raise ValidationError(
            "subscription.keys", 'subscription.keys must be an object, {"p256dh": "...", "auth": "..."}'
        )
    p256dh = _base64url(keys.get("p256dh"), "subscription.keys.p256dh")
    if len(p256dh) != 65 or p256dh[0] != 0x04 or not _on_p256(p256dh):
        raise ValidationError(
            "subscription.keys.p256dh",
            "subscription.keys.p256dh must be the browser's P-256 public key: 65 bytes, uncompressed "
            f"(starting 0x04), on the curve; this one is {len(p256dh)} bytes",
        )
    auth = _base64url(keys.get("auth"), "subscription.keys.auth")
    if len(auth) != 16:
        raise ValidationError(
            "subscription.keys.auth",
            f"subscription.keys.auth must be the 16-byte auth secret; this one is {len(auth)} bytes",
        )
    return WebPushSubscription(endpoint, _encode(p256dh), _encode(auth))


def _endpoint(value: Any) -> str:
    name = "subscription.endpoint"
    if not isinstance(value, str) or not value:
        raise ValidationError(name, f"{name} is required: the https:// URL of the browser's push service")
    if len(value) > ENDPOINT_MAX_CHARS:
        raise ValidationError(name, f"{name} is {len(value)} characters; the limit is {ENDPOINT_MAX_CHARS}")
    try:
        parts = urlsplit(value)
        # .port raises ValueError for a port that is not a number up to 65535. No user:password@.
        valid = (
            parts.scheme == "https" and bool(parts.hostname) and parts.port != 0 and "@" not in parts.netloc
        )
    except ValueError:  # a malformed host or port
        valid = False
    if not valid:
        raise ValidationError(name, f"{name} must be the https:// URL of the browser's push service")
    return value


def _base64url(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValidationError(name, f"{name} is required, base64url-encoded as the browser gives it")
    try:
        if not _BASE64URL.fullmatch(value):
            raise ValueError(value)
        text = value.rstrip("=")
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error) as exc:
        raise ValidationError(name, f"{name} is not base64url (A-Z, a-z, 0-9, '-', '_')") from exc


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _on_p256(point: bytes) -> bool:
    """Whether the uncompressed point ``04 || x || y`` lies on P-256: a key off it cannot be encrypted to."""
    x = int.from_bytes(point[1:33], "big")
    y = int.from_bytes(point[33:], "big")
    p = _P256_P
    return x < p and y < p and (y * y - (x * x * x - 3 * x + _P256_B)) % p == 0


def _text(value: Any, name: str, max_chars: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(name, f"{name} must be a string")
    if len(value) > max_chars:
        raise ValidationError(name, f"{name} is {len(value)} characters; the limit is {max_chars}")
    return value


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise ValidationError("tags", 'tags must be a list of strings, e.g. ["kitchen", "beta"]')
    tags = list(dict.fromkeys(tag.strip() for tag in value))
    if "" in tags:
        raise ValidationError("tags", "a tag cannot be blank")
    if len(tags) > TAGS_MAX:
        raise ValidationError("tags", f"{len(tags)} tags given; the limit is {TAGS_MAX}")
    for tag in tags:
        if len(tag) > TAG_MAX_CHARS:
            raise ValidationError("tags", f"tag {tag[:20]!r}... is longer than {TAG_MAX_CHARS} characters")
    return tags


def _topics(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValidationError(
            "topics", 'topics must be a list of topic names, e.g. ["front-door"]; [] means all of yours'
        )
    names = list(dict.fromkeys(value))
    if len(names) > TOPICS_MAX:
        raise ValidationError("topics", f"{len(names)} topics given; the limit is {TOPICS_MAX}")
    for name in names:
        try:
            check_topic_name(name)
        except ValidationError as exc:
            raise ValidationError("topics", f"{name[:70]!r}: {exc.message}") from None
    return names


def token_hint(device: Device) -> str:
    """Enough of the token or endpoint to tell devices apart, never enough to push to one."""
    if device.push_token is not None:
        found = _EXPO_TOKEN.fullmatch(device.push_token)
        if found is None:  # not written by this module
            return "..."
        tail = found[2][-4:] if len(found[2]) >= 12 else ""
        return f"{found[1]}[...{tail}]"
    if device.webpush_endpoint is not None:
        parts = urlsplit(device.webpush_endpoint)
        host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
        return f"{parts.scheme}://{host}/...{device.webpush_endpoint[-4:]}"
    return ""


def device_dict(device: Device) -> dict[str, Any]:
    """The documented device shape: no token, endpoint or key (see the module docstring)."""
    return {
        "id": device.id,
        "platform": device.platform,
        "token_hint": token_hint(device),
        "device_name": device.device_name,
        "app_version": device.app_version,
        "external_id": device.external_id,
        "tags": list(device.tags or []),
        "topics": list(device.topics or []),
        "status": device.status,
        "created_at": iso(device.created_at),
        "last_seen_at": iso(device.last_seen_at),
    }


def _user_id(principal: Principal) -> str:
    if principal.kind != "user" or not principal.user_id:
        raise Unauthorized(
            "devices are registered with a user token: Authorization: Bearer <token>", error="Invalid token"
        )
    return principal.user_id


class Devices:
    def __init__(self, sessions: async_sessionmaker[Any], targets: DeviceTargets) -> None:
        self._sessions = sessions
        self._targets = targets  # kept current with every change made here

    async def register(self, principal: Principal, fields: Mapping[str, Any]) -> Registered:
        """Add a device, or update the user's device with the same push token or Web Push endpoint."""
        _user_id(principal)
        registration = parse_registration(fields)
        try:
            return await self._upsert(principal, registration)
        except IntegrityError:
            # A concurrent registration of the same token or endpoint inserted it first: update that one.
            return await self._upsert(principal, registration)

    async def _upsert(self, principal: Principal, registration: Registration) -> Registered:
        user_id = _user_id(principal)
        subscription = registration.subscription
        if subscription is not None:
            same_target = Device.webpush_endpoint == subscription.endpoint
        else:
            same_target = Device.push_token == registration.push_token
        now = utcnow()
        async with self._sessions() as session:
            await self._check_topics(session, principal, registration.given.get("topics", []))
            device = await session.scalar(select(Device).where(Device.user_id == user_id, same_target))
            created = device is None
            if device is None:
                device = Device(
                    id=new_id(),
                    user_id=user_id,
                    device_name="",
                    app_version="",
                    external_id=None,
                    tags=[],
                    topics=[],
                    created_at=now,
                )
                session.add(device)
            device.platform = registration.platform
            device.push_token = registration.push_token
            device.webpush_endpoint = subscription.endpoint if subscription else None
            device.webpush_p256dh = subscription.p256dh if subscription else None
            device.webpush_auth = subscription.auth if subscription else None
            for name, value in registration.given.items():
                setattr(device, name, value)
            device.status = "active"
            device.last_seen_at = now
            await session.commit()
        self._targets.put(device)
        return Registered(device_dict(device), created)

    @staticmethod
    async def _check_topics(session: Any, principal: Principal, names: list[str]) -> None:
        """Every named topic exists and ``principal`` may access it; both failures read the same."""
        if not names:
            return
        rows = await session.scalars(select(Topic).where(Topic.name.in_(names)))
        found = {topic.name: topic_info(topic) for topic in rows}
        for name in names:
            info = found.get(name)
            if info is None or not Access.may_access(principal, info):
                raise ValidationError(
                    "topics",
                    f'there is no topic "{name}" you may use: name your own topics (GET /api/topics) '
                    "or public ones",
                )

    async def list_devices(self, principal: Principal) -> list[dict[str, Any]]:
        """The user's devices, most recently seen first."""
        user_id = _user_id(principal)
        stmt = (
            select(Device)
            .where(Device.user_id == user_id)
            .order_by(Device.last_seen_at.desc(), Device.id.desc())
        )
        async with self._sessions() as session:
            return [device_dict(device) for device in await session.scalars(stmt)]

    async def delete(self, principal: Principal, device_id: str) -> dict[str, Any]:
        """Remove the user's device; another user's device is reported exactly like an unknown id."""
        user_id = _user_id(principal)
        async with self._sessions() as session:
            device = await owned(
                session, Device, device_id, Device.user_id, user_id, what="device", listing="/api/devices"
            )
            await session.delete(device)
            await session.commit()
        self._targets.remove(device_id)
        return {"id": device_id, "deleted": True}

    async def expire(self, device_id: str, reason: str) -> None:
        """Stop sending to a device its push service no longer knows (Web Push 404/410, Expo
        ``DeviceNotRegistered``); registering it again makes it active."""
        async with self._sessions() as session:
            await session.execute(update(Device).where(Device.id == device_id).values(status="expired"))
            await session.commit()
        self._targets.remove(device_id)
        log.info("device %s expired: %s", device_id, reason)
