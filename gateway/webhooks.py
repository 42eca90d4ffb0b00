"""Account webhooks and a message's callback_url: what is sent where, signed with which secret.

The management API (``/api/webhooks``, ``http_bridge.webhooks``) acts for one user (a user token); another
user's webhook answers exactly as an unknown id does (``NotFound``). Fields, checked here, each error
naming its field; unknown fields are refused (``secret`` among them: pushgate makes it), the read-only
``id``, ``created_at`` and ``updated_at`` are ignored so a client may send back what it got:

- ``url`` (required): http:// or https://, at most ``URL_MAX_CHARS``, not refused by the SSRF rules of
  ``gateway.channels.webhook.UrlGuard`` (checked again at every delivery);
- ``events`` (required): a non-empty list of ``action``, ``delivered``, ``read``, ``expired``,
  ``key_revoked``, ``all``;
- ``topic_ids``: the user's topics, by id (or name, stored as the id); empty, the default, is every topic
  the user owns, also those created later;
- ``active``: true (default) or false; an inactive webhook gets no new deliveries, and pending ones fail.

A user has at most ``WEBHOOKS_PER_USER`` webhooks.

**Secrets.** Each webhook gets a secret (``whsec_…``) when it is created, shown in that answer only and
never listed. Unlike API keys and tokens, which are stored as hashes, it is stored as it is: the gateway
must compute HMAC-SHA256 with it for every delivery, and a hash cannot sign. Whoever can read the database
can read these secrets; treat the database file as the secret it holds. To change a secret, delete the
webhook and create it again.

A message's ``callback_url`` is signed with its topic owner's *callback secret* (``cbsec_…``), which the
owner reads with ``GET /api/webhooks/callback-secret``. It is derived, not stored:
``"cbsec_" + hex(HMAC-SHA256(root, "callback:" + user_id))``, where the root is ``[webhooks]
callback_secret`` or, when that is empty, a random value generated into ``<data_dir>/callback_secret`` at
first start. So every user's differs, none lets one forge another's, and each stays the same across
restarts. A topic without an owner (made with ``pushgate topic create`` without ``--owner``) signs its
callbacks with the root itself, which only the operator holds. Changing the root changes every callback
secret.

**Events.** Rows are added in the transaction that records the change (``gateway.actions``, and the
outbox when a message reaches its first subscriber), one per matching webhook: the topic owner's,
active, subscribed to the event or to ``all``, and with the topic in ``topic_ids`` (or none listed). The
bodies, compact JSON:

- ``action``: iotpush's webhook action event, ``{"event": "action", "message_id", "topic", "action_id",
  "action_label", "reply_text", "device_name", "acted_at"}``; also POSTed to the message's
  ``callback_url``, if it has one, whoever owns the topic;
- ``delivered``, ``read``, ``expired``: ``{"event", "message_id", "topic", "receipt": <the receipt as
  GET /api/receipts/{id} answers it>}``. ``delivered`` is sent once, when the first target (an MQTT
  subscriber today) receives the message; ``read`` on every read report; ``expired`` when the ttl ran out
  unread;
- ``key_revoked``: ``{"event", "key_id", "label", "topic", "topic_id", "reason", "strikes",
  "window_seconds", "revoked_at", "message_id"}`` when ``[ratelimit] auto_revoke`` revoked a key that kept
  exceeding its rate limit (``gateway.autorevoke``); ``message_id`` is the notice posted to the topic;
- ``test`` (``POST /api/webhooks/{id}/test``): ``{"event": "test", "webhook_id", "sent_at"}``. It is sent
  at once, not through the outbox, and the answer says how the target replied.

Headers, signature and retry rules: ``gateway.channels.webhook``; backoff: ``gateway.outbox.RetryPolicy``
with ``[webhooks]``'s settings. ``GET /api/webhooks/{id}/deliveries`` is the webhook's delivery log,
newest first; a deleted webhook's log is deleted with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, true
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.access import Principal
from gateway.channels import State
from gateway.channels.webhook import CALLBACK, HttpSender, UrlGuard, UrlRefused, WebhookChannel, delivery_id
from gateway.config import WebhooksConfig
from gateway.envelope import iso
from gateway.errors import Conflict, Unauthorized, ValidationError
from gateway.ids import new_id
from gateway.outbox import RetryPolicy, event_row
from gateway.receipts import receipt_dict
from gateway.storage.models import Delivery, Message, Receipt, Topic, Webhook, utcnow
from gateway.storage.owned import owned

__all__ = [
    "ALL",
    "DELIVERY_STATES",
    "EVENTS",
    "TOPIC_IDS_MAX",
    "URL_MAX_CHARS",
    "WEBHOOKS_PER_USER",
    "CreatedWebhook",
    "Webhooks",
    "receipt_event",
    "webhook_dict",
]

EVENTS = ("action", "delivered", "read", "expired", "key_revoked")
ALL = "all"
# iotpush's contract: "Up to 10 webhooks per account".
WEBHOOKS_PER_USER = 10
URL_MAX_CHARS = 2048  # as [limits] url_max_chars' default: longer URLs are a mistake, not a need
TOPIC_IDS_MAX = 100  # more topics than one person owns in practice
DELIVERY_STATES = (State.PENDING.value, State.SENT.value, State.FAILED.value, State.DEAD.value)
# The delivery log shows the latest deliveries, as receipts' pages do: default 50, at most 100.
_LOG_DEFAULT = 50
_LOG_MAX = 100

_FIELDS = ("url", "events", "topic_ids", "active")
_READ_ONLY = frozenset({"id", "created_at", "updated_at"})
_CHANNEL = WebhookChannel.name
_ROOT_FILE = "callback_secret"
_EXAMPLE_URL = "https://hub.lan/hooks/pushgate"
_NUMBER = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True, slots=True)
class CreatedWebhook:
    """A new webhook as the API shows it, and its secret, shown to the person once."""

    webhook: dict[str, Any]
    secret: str


def webhook_dict(hook: Webhook) -> dict[str, Any]:
    """The webhook as the API answers it: never with its secret."""
    return {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.events),
        "topic_ids": list(hook.topic_ids),
        "active": hook.active,
        "created_at": iso(hook.created_at),
        "updated_at": iso(hook.updated_at),
    }


def receipt_event(event: str, message: Message, topic: Topic, receipt: Receipt) -> dict[str, Any]:
    """The body of a ``delivered``, ``read`` or ``expired`` event."""
    return {"event": event, "message_id": message.id, "topic": topic.name, "receipt": receipt_dict(receipt)}


def _subscribed(hook: Webhook, event: str, topic_id: str) -> bool:
    return (ALL in hook.events or event in hook.events) and (not hook.topic_ids or topic_id in hook.topic_ids)


def _owner_id(who: Principal) -> str:
    if who.kind != "user" or not who.user_id:
        raise Unauthorized("webhooks need a user token: Authorization: Bearer <token>", error="Invalid token")
    return who.user_id


def _known_fields(fields: Mapping[str, Any]) -> None:
    for name in fields:
        if name == "secret":
            raise ValidationError("secret", "the secret is made by pushgate and shown once, at creation")
        if name not in _FIELDS and name not in _READ_ONLY:
            raise ValidationError(name, f'unknown field "{name}"; the fields are {", ".join(_FIELDS)}')


def _events(value: Any) -> list[str]:
    choices = (*EVENTS, ALL)
    if not isinstance(value, list) or not value or not all(isinstance(e, str) for e in value):
        raise ValidationError(
            "events", f'events must be a non-empty list of {", ".join(choices)}, e.g. ["action", "read"]'
        )
    unknown = [e for e in value if e not in choices]
    if unknown:
        raise ValidationError("events", f"unknown event {unknown[0]!r}; the events are {', '.join(choices)}")
    return list(dict.fromkeys(value))


def _active(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("active", "active must be true or false")
    return value


def _load_root(configured: str, data_dir: str) -> str:
    """The callback root secret: configured, or read from (first generated into) the data dir."""
    if configured:
        return configured
    path = Path(data_dir) / _ROOT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        root = path.read_text().strip()
        if root:
            return root
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # an earlier start died before writing it
    root = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(root + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return root


class Webhooks:
    def __init__(
        self, sessions: async_sessionmaker[Any], config: WebhooksConfig, guard: UrlGuard, data_dir: str
    ) -> None:
        self._sessions = sessions
        self._config = config
        self._guard = guard
        self._data_dir = data_dir
        self._sender = HttpSender(guard, config.timeout)
        self._root: str | None = None
        self._lock = asyncio.Lock()  # creations are serialised so two cannot both pass the limit
        self._exist = True  # until ``start`` has looked
        self.channel = WebhookChannel(sessions, self._sender, self.callback_secret)
        self.retry = RetryPolicy(config.backoff_base, config.backoff_max, config.max_attempts)

    async def start(self) -> None:
        self._root = await asyncio.to_thread(_load_root, self._config.callback_secret, self._data_dir)
        async with self._sessions() as session:
            self._exist = await session.scalar(select(Webhook.id).limit(1)) is not None
        self._sender.start()

    @property
    def exist(self) -> bool:
        """Whether any account has a webhook (or had one since the start): when none does, events need
        not be looked up for them. Webhooks are made only through this object, so it cannot miss one."""
        return self._exist

    async def close(self) -> None:
        await self._sender.close()

    def callback_secret(self, owner_id: str | None) -> str:
        """The secret the callbacks of ``owner_id``'s topics are signed with (the root for no owner)."""
        if self._root is None:
            raise RuntimeError("Webhooks.start() was not called")
        if owner_id is None:
            return self._root
        mac = hmac.new(self._root.encode(), f"callback:{owner_id}".encode(), hashlib.sha256)
        return "cbsec_" + mac.hexdigest()

    # -- the management API --------------------------------------------------------------------------

    async def user_callback_secret(self, who: Principal) -> dict[str, Any]:
        return {
            "callback_secret": self.callback_secret(_owner_id(who)),
            "signature_header": "X-Pushgate-Signature",
            "algorithm": "sha256=<hex HMAC-SHA256 of the request body, keyed with callback_secret>",
        }

    async def create(self, who: Principal, fields: Mapping[str, Any]) -> CreatedWebhook:
        owner_id = _owner_id(who)
        _known_fields(fields)
        url = await self._url(fields.get("url"))
        events = _events(fields.get("events"))
        active = _active(fields.get("active", True))
        secret = "whsec_" + secrets.token_urlsafe(24)
        async with self._lock, self._sessions() as session:
            topic_ids = await self._topic_ids(session, owner_id, fields.get("topic_ids", []))
            count = await session.scalar(select(func.count(Webhook.id)).where(Webhook.user_id == owner_id))
            if (count or 0) >= WEBHOOKS_PER_USER:
                raise Conflict(
                    f"you have {count} webhooks, the most an account may have; "
                    "delete one (DELETE /api/webhooks/{id}) or widen one's events and topic_ids",
                    error="Too many webhooks",
                )
            now = utcnow()
            hook = Webhook(
                id=new_id(),
                user_id=owner_id,
                url=url,
                events=events,
                topic_ids=topic_ids,
                active=active,
                secret=secret,
                created_at=now,
                updated_at=now,
            )
            session.add(hook)
            await session.commit()
        self._exist = True
        return CreatedWebhook(webhook_dict(hook), secret)

    async def list_webhooks(self, who: Principal) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            hooks = await session.scalars(
                select(Webhook)
                .where(Webhook.user_id == _owner_id(who))
                .order_by(Webhook.created_at, Webhook.id)
            )
            return [webhook_dict(hook) for hook in hooks]

    async def update(self, who: Principal, webhook_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change any of ``url``, ``events``, ``topic_ids``, ``active``; pending deliveries follow."""
        owner_id = _owner_id(who)
        _known_fields(changes)
        values: dict[str, Any] = {}
        if "url" in changes:
            values["url"] = await self._url(changes["url"])
        if "events" in changes:
            values["events"] = _events(changes["events"])
        if "active" in changes:
            values["active"] = _active(changes["active"])
        async with self._sessions() as session:
            hook = await self._owned(session, owner_id, webhook_id)
            if "topic_ids" in changes:
                values["topic_ids"] = await self._topic_ids(session, owner_id, changes["topic_ids"])
            for name, value in values.items():
                setattr(hook, name, value)
            hook.updated_at = utcnow()
            await session.commit()
        return webhook_dict(hook)

    async def delete(self, who: Principal, webhook_id: str) -> dict[str, Any]:
        """Delete the webhook and its delivery log; pending deliveries to it are dropped."""
        async with self._sessions() as session:
            hook = await self._owned(session, _owner_id(who), webhook_id)
            await session.execute(
                delete(Delivery).where(Delivery.channel == _CHANNEL, Delivery.target == hook.id)
            )
            await session.delete(hook)
            await session.commit()
        return {"id": hook.id, "deleted": True}

    async def deliveries(self, who: Principal, webhook_id: str, params: Mapping[str, str]) -> dict[str, Any]:
        """The webhook's latest deliveries, newest first; ``limit`` (≤ 100) and ``state`` filter them."""
        owner_id = _owner_id(who)
        limit = _limit(params.get("limit") or None)
        state = params.get("state") or None
        if state is not None and state not in DELIVERY_STATES:
            raise ValidationError("state", f"state must be one of {', '.join(DELIVERY_STATES)}")
        async with self._sessions() as session:
            hook = await self._owned(session, owner_id, webhook_id)
            query = select(Delivery).where(Delivery.channel == _CHANNEL, Delivery.target == hook.id)
            if state is not None:
                query = query.where(Delivery.state == state)
            rows = await session.scalars(query.order_by(Delivery.id.desc()).limit(limit))
            return {"deliveries": [_delivery_dict(d) for d in rows]}

    async def test(self, who: Principal, webhook_id: str) -> dict[str, Any]:
        """Send a signed ``test`` event now and say how the target answered."""
        async with self._sessions() as session:
            hook = await self._owned(session, _owner_id(who), webhook_id)
        body = {"event": "test", "webhook_id": hook.id, "sent_at": iso(utcnow())}
        delivery = str(uuid.uuid4())
        raw = json.dumps(body, separators=(",", ":")).encode()
        outcome, status = await self._sender.post(hook.url, hook.secret, "test", delivery, raw)
        return {
            "success": outcome.state is State.SENT,
            "delivery_id": delivery,
            "status_code": status,
            "error": outcome.error,
        }

    async def _url(self, value: Any) -> str:
        if value is None or value == "":
            raise ValidationError("url", f'url is required, e.g. "{_EXAMPLE_URL}"')
        if not isinstance(value, str):
            raise ValidationError("url", "url must be a string")
        if len(value) > URL_MAX_CHARS:
            raise ValidationError("url", f"url is {len(value)} characters; the limit is {URL_MAX_CHARS}")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError("url", f"url must be an http:// or https:// URL, e.g. {_EXAMPLE_URL}")
        try:
            await self._guard.check(value)
        except UrlRefused as exc:
            raise ValidationError("url", exc.message) from None
        return value

    @staticmethod
    async def _topic_ids(session: Any, owner_id: str, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise ValidationError("topic_ids", "topic_ids must be a list of your topics' ids")
        if len(value) > TOPIC_IDS_MAX:
            raise ValidationError("topic_ids", f"{len(value)} topics given; the limit is {TOPIC_IDS_MAX}")
        wanted = list(dict.fromkeys(value))
        if not wanted:
            return []
        rows = await session.execute(
            select(Topic.id, Topic.name).where(
                Topic.owner_id == owner_id, Topic.id.in_(wanted) | Topic.name.in_(wanted)
            )
        )
        ids = {}
        for topic_id, name in rows.all():
            ids[topic_id] = ids[name] = topic_id
        for given in wanted:
            if given not in ids:
                raise ValidationError(
                    "topic_ids", f"you have no topic {given!r}; GET /api/topics lists yours"
                )
        return list(dict.fromkeys(ids[given] for given in wanted))

    @staticmethod
    async def _owned(session: Any, owner_id: str, webhook_id: str) -> Webhook:
        """The user's webhook; another user's is reported exactly like an unknown id."""
        return await owned(
            session, Webhook, webhook_id, Webhook.user_id, owner_id, what="webhook", listing="/api/webhooks"
        )

    # -- events --------------------------------------------------------------------------------------

    async def queue(
        self,
        session: Any,
        message: Message,
        topic: Topic,
        now: datetime,
        event: str,
        payload: Mapping[str, Any],
    ) -> list[Delivery]:
        """Add one row per webhook that wants ``event`` of ``topic`` (and the message's callback_url for
        an action) to ``session``; the caller commits and turns the rows into jobs (``event_job``)."""
        targets: list[str] = []
        if topic.owner_id is not None:
            hooks = await session.scalars(
                select(Webhook)
                .where(Webhook.user_id == topic.owner_id, Webhook.active.is_(true()))
                .order_by(Webhook.created_at, Webhook.id)
            )
            targets = [hook.id for hook in hooks if _subscribed(hook, event, topic.id)]
        if event == "action" and message.callback_url:
            targets.append(CALLBACK)
        if not targets:
            return []
        rows = [event_row(message.id, _CHANNEL, event, payload, now, target) for target in targets]
        session.add_all(rows)
        return rows


def _limit(value: str | None) -> int:
    if value is None:
        return _LOG_DEFAULT
    if not _NUMBER.fullmatch(value.strip()) or int(value) < 1:
        raise ValidationError("limit", f"limit must be a whole number from 1 to {_LOG_MAX}")
    return min(int(value), _LOG_MAX)


def _delivery_dict(row: Delivery) -> dict[str, Any]:
    return {
        "id": delivery_id(row.message_id, row.id),
        "event": row.event,
        "message_id": row.message_id,
        "state": row.state,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "next_attempt_at": iso(row.next_attempt_at) if row.state == State.PENDING.value else None,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }
