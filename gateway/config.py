"""Typed configuration: defaults here, then a TOML file, then ``PUSHGATE_<SECTION>_<KEY>`` variables.

Every limit is a field with its unit in the name or the comment, so `config/pushgate.toml` can document
it one to one; `tests/test_config.py` checks that the file and these defaults agree.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

__all__ = [
    "Config",
    "ExpoConfig",
    "HomeAssistantConfig",
    "HttpConfig",
    "LimitsConfig",
    "LogConfig",
    "MqttConfig",
    "OutboxConfig",
    "PushoverConfig",
    "RateLimitConfig",
    "StorageConfig",
    "TopicsConfig",
    "WebPushConfig",
    "WebhooksConfig",
    "load_config",
]

SECONDS = 1.0
KIB = 1024


@dataclass(frozen=True, slots=True)
class StorageConfig:
    data_dir: str = "./data"
    # Empty means sqlite+aiosqlite:///<data_dir>/pushgate.db. Any SQLAlchemy async URL works.
    database_url: str = ""
    # FULL: a commit survives power loss, not only a killed process; group commit pays for it once per batch.
    sqlite_synchronous: str = "FULL"
    # How long a write waits for another process's write lock before it fails (the push is not answered).
    sqlite_busy_timeout: float = 30 * SECONDS
    # Messages older than this are pruned; 0 keeps them for ever.
    retention_days: int = 30

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{Path(self.data_dir).resolve() / 'pushgate.db'}"


@dataclass(frozen=True, slots=True)
class HttpConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    # A request body above this is refused with 413 before it is read in full.
    max_body_bytes: int = 64 * KIB
    # In-flight requests get this long to finish on SIGINT/SIGTERM.
    graceful_timeout: float = 10 * SECONDS


@dataclass(frozen=True, slots=True)
class MqttConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 1883
    # Root of pushgate's MQTT contract: <prefix>/<topic>/push, /message, /error, ...
    prefix: str = "pushgate"
    websocket_enabled: bool = False
    websocket_port: int = 8083
    # Clients without credentials may push to and read public topics only.
    allow_anonymous: bool = True
    # A connection that has not sent CONNECT by then is closed (slow-loris guard).
    connect_timeout: float = 10 * SECONDS
    # Largest packet accepted (remaining length, bytes); a larger one closes that connection only.
    max_packet_size: int = 256 * KIB
    # QoS 1/2 messages queued per offline persistent session; beyond this the oldest are kept and new
    # ones dropped and counted (mosquitto's max_queued_messages default).
    max_queued_messages: int = 1000
    # Outgoing QoS 1/2 messages unacknowledged per client; further ones wait (up to max_queued_messages)
    # until acknowledgements free the window, so a slow or stalled client cannot make the broker buffer
    # without bound (mosquitto's max_inflight_messages default).
    max_inflight: int = 20
    # Pushes read from clients but not yet stored, all connections together; past it, a connection that
    # pushes is not read again until half of them are stored, so a flood waits in TCP, not in memory.
    max_pending_pushes: int = 10_000
    # A disconnected persistent session is forgotten after this long (7 days); 0 keeps it for ever.
    session_expiry: float = 7 * 24 * 3600 * SECONDS
    # Concurrent connections per listener; 0 is unlimited.
    max_connections: int = 0
    # How often connected sessions' keys are re-checked for revocations made by another process (the CLI);
    # revocations made by the running server itself (the API) disconnect at once.
    key_audit_interval: float = 5 * SECONDS
    # Access to topics outside <prefix>/ (the home broker): "allow|deny WHO ACCESS FILTER" rules, the
    # first that matches decides, no match is deny. WHO: anonymous, user, user:<name>, any. ACCESS:
    # read, write, readwrite. Environment override: rules separated by ";".
    home_acl: tuple[str, ...] = ("allow user readwrite #",)


@dataclass(frozen=True, slots=True)
class TopicsConfig:
    # Off: a push to an unknown topic is 404, as the design asks. On: it creates a public topic.
    auto_create: bool = False
    # Topic privacy is cached this long for the MQTT ACL; changes made by this process apply at once.
    cache_seconds: float = 2 * SECONDS


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    title_max_chars: int = 250
    message_max_bytes: int = 4096
    tags_max: int = 10
    tag_max_chars: int = 64
    url_max_chars: int = 2048


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Token buckets on pushes; `gateway/ratelimit.py` says what the answer headers mean."""

    # Off: no push is refused for its rate, and answers carry no X-RateLimit-* headers.
    enabled: bool = True
    # Pushes one API key (or one user, all its tokens together) may send at once: two minutes' worth at
    # the sustained rate, so a device flushing readings it buffered while offline, or a script or hub
    # sending a batch, is not refused, while a runaway loop() is held back within a second or two.
    key_burst: int = 600
    # Pushes per second per key once the burst is spent (the refill rate): a few per second sustained is
    # more than any sensor needs, and keeps a stuck device from flooding phones and the database.
    key_per_second: float = 5.0
    # Pushes one client address may send at once, whatever its credentials; anonymous pushes have only
    # this limit. Twice the key's: several devices may share an address (NAT, a reverse proxy).
    address_burst: int = 1200
    # Pushes per second per address once its burst is spent.
    address_per_second: float = 10.0
    # IPv6 clients are counted per network of this prefix length (bits): one host holds a whole /64.
    address_ipv6_prefix: int = 64
    # Buckets kept in memory per kind (keys, addresses), about 200 bytes each (10000 of both: about 4 MB).
    # Full buckets are forgotten as they refill; past this many the least recently used is evicted
    # (counted, logged): that client starts again from a full bucket, so a flood of new addresses never
    # locks others out.
    max_buckets: int = 10000
    # Off: a key is never revoked for its rate. On: a key refused for its own rate auto_revoke_strikes
    # times within auto_revoke_window is revoked at once (PushStaq's "exceeds rate limit ... the API Key
    # will be revoked"), logged, posted to its topic and sent to the owner's webhooks as key_revoked.
    # A client that honours Retry-After is refused a handful of times, a spamming one hundreds.
    auto_revoke: bool = False
    # Refusals (429 for the key's own bucket) that revoke the key when they fall within the window.
    auto_revoke_strikes: int = 100
    # The window the strikes are counted in (one minute).
    auto_revoke_window: float = 60 * SECONDS


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    # Deliveries handed to the channels per database round trip (a burst of MQTT pushes is delivered and
    # recorded this many at a time).
    batch_size: int = 500
    # How often the worker looks for due deliveries when nothing wakes it.
    poll_interval: float = 1 * SECONDS
    # An MQTT delivery waits this long for a subscriber before it is marked expired.
    mqtt_pending_ttl: float = 24 * 3600 * SECONDS
    # Concurrent publishes queued for the group-commit writer; more waits (back-pressure).
    write_queue_size: int = 1000


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    """Account webhooks and messages' callback_url; `gateway/webhooks.py` describes both."""

    # Hosts webhook and callback URLs may reach although they resolve to a loopback or link-local address
    # or to this gateway's own listen address (refused otherwise, against SSRF): host names as in the URL,
    # or IP addresses and networks ("192.168.1.10", "127.0.0.1", "fd00::/8"). For a hub on this machine.
    allowed_hosts: tuple[str, ...] = ()
    # A target must answer within this long; otherwise the attempt counts as failed and is retried.
    timeout: float = 10 * SECONDS
    # Attempts per delivery before it is marked dead: with the backoff below, 2.7 to 5.4 hours of retrying
    # (jitter decides), so a hub that reboots or is offline for an afternoon still gets its events.
    max_attempts: int = 15
    # Wait before the second attempt; each further wait doubles, up to backoff_max, and is jittered to
    # between half and all of that (many deliveries failing together do not retry in lockstep).
    backoff_base: float = 5 * SECONDS
    # The longest wait between two attempts (one hour).
    backoff_max: float = 3600 * SECONDS
    # Requests in flight at once, over all targets; more wait their turn. A slow target never holds up
    # MQTT delivery, which has its own lane.
    concurrency: int = 16
    # The root of the callback_url signing secrets. Empty: one is generated into
    # <data_dir>/callback_secret at first start. Set it when several gateways share one database.
    callback_secret: str = ""


@dataclass(frozen=True, slots=True)
class WebPushConfig:
    """Browsers' Web Push subscriptions; `gateway/channels/webpush.py` describes the delivery."""

    # The VAPID key pair that signs every request. Empty: generated into <data_dir>/vapid_private_key.pem
    # (mode 0600) at first start and kept. Changing the key invalidates every browser subscription.
    # vapid_private_key: the raw 32-byte private key, base64url (as web-push tools print it), or PEM text.
    vapid_private_key: str = ""
    # A PEM file holding the private key; used when vapid_private_key is empty.
    vapid_private_key_file: str = ""
    # The VAPID "sub" claim: how a push service operator reaches you (mailto: or https:). Apple's push
    # service refuses localhost addresses: set your own.
    subject: str = "mailto:pushgate@localhost"
    # How long a push service keeps a message for a browser that is offline, when the message has no ttl.
    default_ttl: int = 86400
    # A push service must answer within this long, or the attempt counts as failed and is retried.
    timeout: float = 10 * SECONDS
    # Requests in flight at once, over all subscriptions (and the most connections kept open). Four times
    # as many messages are being encrypted meanwhile.
    concurrency: int = 32
    # Attempts per delivery (429, 5xx, timeouts and connection errors are retried) before it is dead.
    max_attempts: int = 15
    # Wait before the second attempt; each further wait doubles up to backoff_max, jittered to 50-100 %.
    backoff_base: float = 5 * SECONDS
    # The longest wait between two attempts (one hour); a longer Retry-After is cut to this.
    backoff_max: float = 3600 * SECONDS
    # Push services the SSRF check lets through although they resolve to loopback, link-local or this
    # gateway's own address: host names as in the URL, or addresses and networks (as [webhooks]).
    allowed_hosts: tuple[str, ...] = ()
    # A PEM file of extra CA certificates trusted for push services, beside the system's (a push service
    # of your own with a private CA). Endpoints are always https.
    ca_file: str = ""


@dataclass(frozen=True, slots=True)
class ExpoConfig:
    """Phones through the Expo push service; `gateway/channels/expo.py` describes the delivery."""

    # Off: iOS and Android devices get nothing (their deliveries are not created).
    enabled: bool = True
    # The Expo push API: .../push/send and .../push/getReceipts are below it. Change it only for a
    # compatible service (a test double, a proxy).
    base_url: str = "https://exp.host/--/api/v2"
    # Sent as "Authorization: Bearer" when the Expo project enforces push security; empty: none. A secret:
    # never logged.
    access_token: str = ""
    # Expo must answer a request within this long; otherwise the batch is retried.
    timeout: float = 10 * SECONDS
    # Requests to Expo in flight at once (Expo's own SDK opens at most six connections).
    concurrency: int = 4
    # Notifications per request: Expo takes at most 100.
    batch_size: int = 100
    # Expo hands a notification to Apple or Google asynchronously; its receipt says whether that worked.
    # Receipts are fetched this long after the send (15 minutes, as Expo recommends).
    receipt_delay: float = 15 * 60 * SECONDS
    # Receipt ids per getReceipts request: Expo takes at most 1000.
    receipt_batch_size: int = 1000
    # Expo keeps receipts for a day: a check still unanswered this long after the send is dropped (the
    # delivery stays "sent", unconfirmed).
    receipt_expiry: float = 24 * 3600 * SECONDS
    # Attempts per notification (network errors, 429, 5xx, MessageRateExceeded are retried) before it is
    # marked dead: with the backoff below, 50 minutes to 1.7 hours of retrying.
    max_attempts: int = 12
    # Wait before the second attempt; each further wait doubles up to backoff_max, jittered to 50-100 %;
    # Expo's Retry-After lengthens it.
    backoff_base: float = 5 * SECONDS
    # The longest wait between two attempts (30 minutes).
    backoff_max: float = 1800 * SECONDS


@dataclass(frozen=True, slots=True)
class PushoverConfig:
    """The Pushover-compatible API (`http_bridge/pushover.py`, `gateway/pushover.py`)."""

    # Messages one topic (Pushover's "application") may send through the Pushover API per calendar month
    # (UTC); all of its keys share it. Pushover's free quota per application is 10,000.
    monthly_limit: int = 10000
    # Largest attachment, decoded, in bytes (5 MiB, as Pushover's current limit).
    attachment_max_bytes: int = 5 * KIB * KIB
    # Largest request body on the Pushover message endpoints only (every other route keeps [http]
    # max_body_bytes): a 5 MiB attachment base64-encoded in a URL-encoded form is about 7.5 MB.
    max_body_bytes: int = 10 * KIB * KIB


@dataclass(frozen=True, slots=True)
class HomeAssistantConfig:
    """MQTT discovery for Home Assistant; `gateway/homeassistant.py` says what is published and to whom."""

    # On: every topic is announced as a device with an event entity and a device trigger per action id.
    discovery: bool = True
    # Home Assistant's discovery prefix (its MQTT integration's setting, "homeassistant" unless changed).
    discovery_prefix: str = "homeassistant"


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "INFO"


@dataclass(frozen=True, slots=True)
class Config:
    storage: StorageConfig = field(default_factory=StorageConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    webpush: WebPushConfig = field(default_factory=WebPushConfig)
    expo: ExpoConfig = field(default_factory=ExpoConfig)
    pushover: PushoverConfig = field(default_factory=PushoverConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    log: LogConfig = field(default_factory=LogConfig)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(value: Any, target: Any, where: str) -> Any:
    """Turn a TOML value or an environment string into the field's type, or say which key is wrong."""
    if isinstance(target, types.UnionType):
        target = next(t for t in typing.get_args(target) if t is not type(None))
    if typing.get_origin(target) is tuple:  # tuple[str, ...]: a TOML array, or ";"-separated in env
        items = value.split(";") if isinstance(value, str) else value
        if isinstance(items, list | tuple) and all(isinstance(item, str) for item in items):
            return tuple(item.strip() for item in items if item.strip())
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(value)
        if target is int and isinstance(value, bool):
            raise ValueError(value)
        if target is float and isinstance(value, int | float | str):
            return float(value)
        if target is int and isinstance(value, int | str):
            return int(value)
        if target is str:
            return str(value)
    except ValueError:
        pass
    raise ConfigError(f"{where}: expected {getattr(target, '__name__', target)}, got {value!r}")


def _section(cls: type, values: Mapping[str, Any], env: Mapping[str, str], name: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        env_name = f"PUSHGATE_{name.upper()}_{f.name.upper()}"
        if env_name in env:
            kwargs[f.name] = _coerce(env[env_name], hints[f.name], env_name)
        elif f.name in values:
            kwargs[f.name] = _coerce(values[f.name], hints[f.name], f"[{name}] {f.name}")
    return cls(**kwargs)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration: defaults, then the file (``path`` or ``$PUSHGATE_CONFIG``), then env.

    No file is needed; a named file that does not exist is an error, so a typo is not silently ignored.
    """
    env = os.environ if env is None else env
    path = path or env.get("PUSHGATE_CONFIG") or None
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
    sections = {f.name: f for f in dataclasses.fields(Config)}
    unknown = set(data) - set(sections)
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(Config)
    kwargs = {}
    for name in sections:
        values = data.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] must be a table")
        kwargs[name] = _section(hints[name], values, env, name)
    return Config(**kwargs)
