"""The Web Push channel: each message to each registered browser, encrypted and VAPID-signed (pywebpush).

A browser device (``platform: web``, ``gateway.devices``) gets one outbox row per message, on the
``webpush`` lane (``gateway.targets``). An attempt reads the device's subscription as it is now, from the
in-memory device index that registration, deletion and expiry update as they commit (so a device deleted,
expired or registered again meanwhile is honoured, without a query per attempt), and POSTs to its
endpoint:

- the body is the JSON below, encrypted ``aes128gcm`` (RFC 8291) to the browser's ``p256dh`` and
  ``auth`` (``gateway.channels.webpush_encrypt``: a fresh ECDH key and salt per request);
  ``Authorization: vapid t=<JWT>, k=<public key>`` (RFC 8292) is signed with the gateway's VAPID key
  (``gateway.vapid.VapidTokens``): one JWT per push service origin (``sub`` from ``[webpush] subject``,
  ``aud`` the endpoint's origin, ``exp`` 12 hours on), reused until less than an hour of it is left and
  then signed anew with a claims dict built afresh;
- ``TTL``: what is left of the message's ttl, or ``[webpush] default_ttl`` for a message without one; a
  message whose ttl ran out before an attempt is not sent (the row becomes ``expired``);
- ``Urgency``: ``very-low`` for priority lowest, ``low`` for low, ``normal``, ``high`` for high and urgent.

The payload the service worker receives (``PushEvent.data.json()``), compact JSON::

    {"id", "receipt_id", "topic", "title", "message", "priority", "tags", "click_url", "icon",
     "actions", "timestamp", "truncated"}

``icon`` is the message's ``icon_url`` (or null), ``timestamp`` ISO 8601 UTC, the others as in the MQTT
envelope (``gateway.envelope``), which this is built from. Push services accept 4096 bytes of encrypted
body, which leaves 3993 bytes of JSON: a longer one has its ``message`` shortened (at a character
boundary) and ``truncated`` true; the whole message stays readable by its id.

What an answer means (``Outcome``): 2xx (201, 202) is sent and counts the device as reached on the
receipt; 404 and 410 mean the subscription is gone: the device is marked ``expired`` at once (no further
message is sent to it; registering it again revives it) and the row ``failed``; 408, 429 and 5xx, a
timeout or a connection error are tried again (``[webpush]`` backoff, ``Retry-After`` honoured, seconds
or an HTTP date); any other 4xx is a permanent failure, recorded with the service's answer. A
subscription that cannot be sent to at all (a ``p256dh`` that is not a P-256 point, an endpoint path HTTP
cannot carry) fails at once.

Requests go through ``gateway.channels.push_http``: HTTP/1.1 over TLS, connections kept alive per host
(a push service is a few hosts serving many subscriptions), certificates verified against the system's
CAs plus ``[webpush] ca_file``. Endpoints are https (checked at registration). The SSRF rules are the
webhooks' (``UrlGuard``, with ``[webpush] allowed_hosts``), asked for every new connection with the
addresses it would use, so what is checked is what is connected to. Nothing logged or stored carries an
endpoint's path or a subscription key: each is a capability.

Per request the work is the encryption and the request, and little else: the subscription is read from
memory, the VAPID header is reused, and a message's ttl and payload are read and built once for its
whole fan-out. Most of the encryption's CPU is the key agreement (two P-256 scalar multiplications), made
in a helper process (``gateway.channels.webpush_ecdh``) while the event loop goes on; the rest
(``gateway.channels.webpush_encrypt.seal``) is done here. So that the helper is kept busy, the lane works
on ``jobs_at_once`` jobs (four per request in flight), while at most ``[webpush] concurrency`` requests
are in flight.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.channels import Job, Outcome, State
from gateway.channels.push_http import HttpError, Origin, PushHttp
from gateway.channels.webhook import UrlGuard, UrlRefused
from gateway.channels.webpush_ecdh import KeyAgreements
from gateway.channels.webpush_encrypt import Encryptor
from gateway.config import WebPushConfig
from gateway.envelope import as_utc
from gateway.errors import ConfigError
from gateway.json_output import compact_json
from gateway.outbox import RetryPolicy
from gateway.storage.models import Message, utcnow
from gateway.targets import WebPushKeys
from gateway.vapid import VapidKey, VapidTokens, load_vapid_key

__all__ = ["MAX_PLAINTEXT", "URGENCY", "WebPushChannel", "build_payload", "retry_after_seconds"]

log = logging.getLogger(__name__)

# RFC 8030 push services take at least 4096 bytes of body; aes128gcm adds an 86-byte header (salt, record
# size, key id length, 65-byte key), a padding delimiter and a 16-byte tag.
MAX_PLAINTEXT = 4096 - 86 - 1 - 16
URGENCY = {"lowest": "very-low", "low": "low", "normal": "normal", "high": "high", "urgent": "high"}
_PAYLOAD_KEYS = ("id", "receipt_id", "topic", "title", "message", "priority", "tags", "click_url")
_SENT = Outcome(State.SENT, delivered=1)
_JOBS_PER_REQUEST = 4  # jobs the lane works on at once, per request in flight (``jobs_at_once``)
_RETRIED = frozenset({408, 429})
_GONE = frozenset({404, 410})
_MESSAGE_CACHE = 1024  # messages' ttl and payload kept in memory: a fan-out reads its message once
_TARGETS = 1024  # endpoint origins kept (``_Target``): push services are a handful of hosts
_ERROR_CHARS = 300  # of a push service's answer kept in last_error


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date; ``None`` when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, (as_utc(when) - (now or utcnow())).total_seconds())


def build_payload(source: dict[str, Any], icon: str | None, limit: int = MAX_PLAINTEXT) -> bytes | None:
    """The JSON a browser receives, from the message's envelope (``gateway.envelope``, decoded); ``message``
    is shortened to fit ``limit`` bytes. ``None`` when even an empty message does not fit (huge actions or
    URLs)."""
    body: dict[str, Any] = {key: source.get(key) for key in _PAYLOAD_KEYS}
    body["icon"] = icon
    body["actions"] = source.get("actions") or []
    body["timestamp"] = source.get("timestamp")
    body["truncated"] = False

    def encode() -> bytes:
        return compact_json(body)

    data = encode()
    if len(data) <= limit:
        return data
    text: str = body["message"] or ""
    body["truncated"] = True
    body["message"] = ""
    room = limit - len(encode())
    if room < 0:
        return None
    # Each character costs at least its UTF-8 length in the JSON (escapes cost more): shorten until it fits.
    cut = text.encode()[:room].decode(errors="ignore")
    while True:
        body["message"] = cut
        data = encode()
        if len(data) <= limit or not cut:
            return data if len(data) <= limit else None
        cut = cut[: max(0, len(cut) - max(1, (len(data) - limit) // 2))]


@dataclass(frozen=True, slots=True)
class _MessageInfo:
    """What every device's request for a message shares: built once per message, not per device."""

    ttl: int | None
    created_at: datetime
    data: bytes | None  # the payload (``build_payload``); None when it cannot fit
    urgency: str


@dataclass(frozen=True, slots=True)
class _Target:
    """What the requests to one push service origin share: where to connect (``Origin``), the VAPID JWT's
    audience, and where an endpoint's path starts (after ``scheme://netloc``)."""

    origin: Origin
    audience: str
    path_at: int


def _hint(endpoint: str) -> str:
    """The endpoint's origin, which tells services apart; its path is the capability and is never shown."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}/..."


class WebPushChannel:
    """The ``webpush`` outbox lane; ``start`` loads the VAPID key and opens the HTTP client."""

    name = "webpush"

    def __init__(
        self,
        sessions: async_sessionmaker[Any],
        config: WebPushConfig,
        data_dir: str,
        guard: UrlGuard,
        expire: Callable[[str, str], Awaitable[None]],
        subscription: Callable[[str], WebPushKeys | None],
    ) -> None:
        self._sessions = sessions
        self._config = config
        self._data_dir = data_dir
        self._guard = guard
        self._expire = expire
        self._subscription = subscription
        self._messages: OrderedDict[str, asyncio.Future[_MessageInfo | None]] = OrderedDict()
        self._targets: OrderedDict[str, _Target] = OrderedDict()  # by scheme://netloc
        self._agreements = KeyAgreements()
        self._encryptor = Encryptor(self._agreements)
        self._key: VapidKey | None = None
        self._tokens: VapidTokens | None = None
        self._http: PushHttp | None = None
        self._requests = asyncio.Semaphore(max(1, config.concurrency))
        # The lane works on more jobs than there are requests in flight: a job waits for its key agreement
        # (``KeyAgreements``, in the helper process) without holding one of the requests.
        self.jobs_at_once = max(1, config.concurrency) * _JOBS_PER_REQUEST
        self.retry = RetryPolicy(config.backoff_base, config.backoff_max, config.max_attempts)

    @property
    def public_key(self) -> str:
        """The VAPID public key, base64url of the uncompressed point (``applicationServerKey``)."""
        if self._key is None:
            raise RuntimeError("WebPushChannel.start() was not called")
        return self._key.public_key

    async def start(self) -> None:
        self._key = await asyncio.to_thread(load_vapid_key, self._config, self._data_dir)
        subject = self._config.subject
        if not subject.startswith(("mailto:", "https://")):
            raise ConfigError(f"[webpush] subject must be a mailto: or https:// URL, not {subject!r}")
        try:  # py_vapid's own check of the claim, once, rather than on every send
            self._key.signer.sign({"sub": subject, "aud": "https://push.example"})
        except Exception as exc:
            raise ConfigError(f"[webpush] subject {subject!r} is refused: {exc}") from exc
        self._tokens = VapidTokens(self._key, subject)
        tls = await asyncio.to_thread(_tls_context, self._config.ca_file)
        self._http = PushHttp(tls, self._guard, self._config.timeout, max_idle=self._config.concurrency)

    async def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        await self._agreements.close()

    async def subscribers(self, topic: str) -> int:
        return 0  # a targeted lane: the publish pipeline counts its devices

    async def deliver(self, job: Job) -> Outcome:
        subscription = self._subscription(job.target)
        if subscription is None:
            return Outcome(State.FAILED, error="the device was deleted or is no longer active: not sent")
        info = await self._message(job)
        if info is None:
            return Outcome(State.FAILED, error="the message was deleted")
        ttl = self._config.default_ttl
        if info.ttl is not None:
            ttl = info.ttl - int((utcnow() - as_utc(info.created_at)).total_seconds())
            if ttl <= 0:
                return Outcome(State.EXPIRED, error="the message's ttl ran out before it could be sent")
        if info.data is None:
            return Outcome(State.FAILED, error=f"the payload does not fit Web Push's {MAX_PLAINTEXT} bytes")
        return await self._send(job, subscription.endpoint, subscription.p256dh, subscription.auth, info, ttl)

    async def _send(
        self, job: Job, endpoint: str, p256dh: str, auth: str, info: _MessageInfo, ttl: int
    ) -> Outcome:
        tokens, http = self._started()
        try:
            target = self._target(endpoint)
            body = await self._encryptor.encrypt(p256dh, auth, info.data or b"")
            headers = (
                f"TTL: {ttl}\r\nContent-Encoding: aes128gcm\r\nUrgency: {info.urgency}\r\n"
                f"Authorization: {tokens.header(target.audience, time.time())}\r\n"
            )
            path = endpoint[target.path_at :].partition("#")[0] or "/"
            request = target.origin.head(path, headers, len(body)) + body
            async with self._requests:  # at most ``[webpush] concurrency`` in flight
                response = await http.post(target.origin, request)
        except UrlRefused as exc:
            error = exc.message.replace("webhooks may not call", "Web Push may not use").replace(
                "[webhooks]", "[webpush]"
            )
            return Outcome(State.PENDING if exc.temporary else State.FAILED, error=error)
        except TimeoutError:
            return Outcome(State.PENDING, error=f"no answer within {self._config.timeout:g}s")
        except (HttpError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}".replace(endpoint, _hint(endpoint))
            return Outcome(State.PENDING, error=error[:_ERROR_CHARS])
        except ValueError as exc:  # a key that is not a P-256 point, a path HTTP cannot carry
            return Outcome(State.FAILED, error=f"the subscription cannot be sent to: {exc}")
        status = response.status
        if 200 <= status < 300:
            return _SENT
        text = response.body.decode(errors="replace")
        error = f"Push failed: {status} {response.reason}\nResponse body:{text}"
        return await self._refused(
            job, status, error.replace(endpoint, _hint(endpoint)), response.retry_after
        )

    async def _refused(self, job: Job, status: int, text: str, retry_after: str | None) -> Outcome:
        """What a push service's answer other than 2xx means for the delivery and the device."""
        text = text[:_ERROR_CHARS]
        if status in _GONE:
            await self._expire(job.target, f"its push service answered {status}")
            return Outcome(State.FAILED, error=f"HTTP {status}: the subscription is gone; device expired")
        if status in _RETRIED or status >= 500:
            return Outcome(State.PENDING, error=text, retry_after=retry_after_seconds(retry_after))
        log.warning("web push to device %s refused with HTTP %d; not retried", job.target, status)
        return Outcome(State.FAILED, error=text)

    def _started(self) -> tuple[VapidTokens, PushHttp]:
        if self._tokens is None or self._http is None:
            raise RuntimeError("WebPushChannel.start() was not called")
        return self._tokens, self._http

    def _target(self, endpoint: str) -> _Target:
        """The endpoint's origin, kept per origin (``_TARGETS`` of them)."""
        # https://host[:port]/path: the origin is what precedes the path's first slash.
        slash = endpoint.find("/", 8)
        prefix = endpoint if slash < 0 else endpoint[:slash]
        target = self._targets.get(prefix)
        if target is not None:
            return target
        parts = urlsplit(endpoint)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("the endpoint is not an https:// URL with a host")
        netloc = parts.netloc.rpartition("@")[2]  # no user information in Host:
        target = _Target(Origin(parts.hostname, parts.port or 443, netloc), f"https://{netloc}", len(prefix))
        if len(self._targets) >= _TARGETS:
            self._targets.popitem(last=False)
        self._targets[prefix] = target
        return target

    async def _message(self, job: Job) -> _MessageInfo | None:
        """The message's ttl, creation time and payload: read and built once per message (messages never
        change, and every device of a fan-out gets the same payload)."""
        message_id = job.message_id
        cached = self._messages.get(message_id)
        if cached is not None:
            self._messages.move_to_end(message_id)
            if cached.done():  # the rest of a fan-out: no need to wait
                return cached.result()
            return await asyncio.shield(cached)
        future: asyncio.Future[_MessageInfo | None] = asyncio.get_running_loop().create_future()
        self._messages[message_id] = future
        if len(self._messages) > _MESSAGE_CACHE:
            self._messages.popitem(last=False)
        try:
            async with self._sessions() as session:
                row = (
                    await session.execute(
                        select(Message.ttl, Message.icon_url, Message.created_at).where(
                            Message.id == message_id
                        )
                    )
                ).first()
        except BaseException as exc:
            self._messages.pop(message_id, None)
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # whoever shares it sees it; nobody else need retrieve it
            else:
                future.cancel()
            raise
        info = None
        if row is not None:
            envelope = json.loads(job.payload)
            urgency = URGENCY.get(envelope.get("priority"), "normal")
            info = _MessageInfo(row[0], row[2], build_payload(envelope, row[1]), urgency)
        future.set_result(info)
        return info


def _tls_context(ca_file: str) -> ssl.SSLContext:
    """The system's CAs, plus ``ca_file``'s when configured. Blocking file I/O: call it in a thread."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[webpush] ca_file {ca_file}: cannot be loaded ({exc})") from exc
    return context
