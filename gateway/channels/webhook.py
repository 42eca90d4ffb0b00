"""The webhook channel: signed HTTP POSTs of events to account webhooks and to a message's callback_url.

Every request carries:

- ``Content-Type: application/json``; the body is the event's JSON, byte for byte as stored on the row;
- ``X-Pushgate-Event``: the event's name (``action``, ``delivered``, ``read``, ``expired``, ``test``);
- ``X-Pushgate-Delivery``: a UUID naming the delivery, the same on every attempt of it, so a receiver
  drops the duplicates that at-least-once delivery may bring;
- ``X-Pushgate-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes, keyed with the secret's
  UTF-8 bytes. Verify it in constant time before trusting the body, e.g. in Python
  ``hmac.compare_digest(header, "sha256=" + hmac.new(secret.encode(), body, "sha256").hexdigest())``.

What an answer means (``Outcome``): 2xx is sent; 408, 429, 5xx, a timeout, a connection error or a host
that does not resolve is tried again later (the outbox's ``RetryPolicy``, honouring ``Retry-After``); any
other status is a permanent failure, redirects included, as they are not followed (a redirect could lead
past the SSRF check).

SSRF (``UrlGuard``): the URL's host is resolved and every address checked, at creation and again at every
attempt (DNS can change). Loopback, link-local (169.254.0.0/16, the cloud metadata address among them,
and fe80::/10), unspecified, ``0.0.0.0/8`` and multicast addresses are refused, and so is the gateway's
own listen address (each configured HTTP and MQTT host; for a wildcard host, every address of this
machine). Private LAN ranges are fine. ``[webhooks] allowed_hosts`` lifts the check for host names (as
written in the URL) and for addresses or networks. The request then goes to the address that was
checked, not to a second lookup, so DNS cannot change between check and connect; the Host header and
TLS server name stay the URL's. Connections are not kept alive (a pooled connection would be keyed by
the address, not the name) and proxies from the environment are not used.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.channels import Job, Outcome, State
from gateway.storage.models import Message, Topic, Webhook

__all__ = ["CALLBACK", "HttpSender", "UrlGuard", "UrlRefused", "WebhookChannel", "delivery_id", "sign"]

CALLBACK = "callback"  # Delivery.target of a message's callback_url; webhook rows name the webhook's id

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this host" on Linux: 0.x reaches the machine itself
_DELIVERY_NAMESPACE = uuid.UUID("17dba5e6-431a-45bc-8363-ef8c7ecf3672")
_USER_AGENT = "pushgate-webhooks"


class UrlRefused(Exception):
    """Raised when a webhook or callback URL may not be called; ``temporary`` when DNS may yet answer."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.temporary = temporary


def sign(secret: str, body: bytes) -> str:
    """The ``X-Pushgate-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_id(message_id: str, row_id: int) -> str:
    """The ``X-Pushgate-Delivery`` of an outbox row: stable over its attempts, unique across gateways."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{message_id}/{row_id}"))


def _is_local(ip: _IP) -> bool:
    """Whether ``ip`` is an address of this machine: only those can be bound."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


class UrlGuard:
    def __init__(self, allowed_hosts: Iterable[str], listen_hosts: Iterable[str]) -> None:
        self._allowed_names: set[str] = set()
        self._allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allowed_hosts:
            try:
                self._allowed_networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self._allowed_names.add(entry.lower())
        self._listen_hosts = tuple(listen_hosts)
        self._own: set[_IP] | None = None  # resolved at the first check
        self._own_wildcard = any(host in _WILDCARDS for host in self._listen_hosts)

    async def check(self, url: str) -> list[str]:
        """The addresses ``url`` may be called at; ``UrlRefused`` says why it may not."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError as exc:
            raise UrlRefused(f"the URL's port is not a number from 0 to 65535: {url}") from exc
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            raise UrlRefused("the URL must be http:// or https:// with a host")
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UrlRefused(f"the host {host} does not resolve ({exc})", temporary=True) from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if host in self._allowed_names:
            return addresses
        for address in addresses:
            reason = await self._refusal(ipaddress.ip_address(address))
            if reason:
                shown = host if host == address else f"{host} resolves to {address},"
                raise UrlRefused(
                    f"{shown} {reason}, which webhooks may not call (SSRF protection); "
                    "an operator can allow it with [webhooks] allowed_hosts"
                )
        return addresses

    async def _refusal(self, ip: _IP) -> str | None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self._allowed_networks):
            return None
        if ip.is_loopback:
            return "is a loopback address"
        if ip.is_link_local:
            return "is a link-local address"
        if ip.is_unspecified or ip in _THIS_NETWORK:
            return "is an unspecified address"
        if ip.is_multicast:
            return "is a multicast address"
        if ip in await self._own_addresses() or (self._own_wildcard and _is_local(ip)):
            return "is this gateway's own listen address"
        return None

    async def _own_addresses(self) -> set[_IP]:
        if self._own is None:
            own: set[_IP] = set()
            loop = asyncio.get_running_loop()
            for host in self._listen_hosts:
                if host in _WILDCARDS:
                    continue
                try:
                    own.add(ipaddress.ip_address(host))
                except ValueError:
                    try:
                        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
                    except socket.gaierror:
                        continue
                    own.update(ipaddress.ip_address(str(info[4][0])) for info in infos)
            self._own = own
        return self._own


def _retry_after(value: str | None) -> float | None:
    return float(value) if value is not None and value.strip().isdigit() else None


class HttpSender:
    """POSTs signed bodies through ``UrlGuard``; ``start`` and ``close`` bracket its HTTP client."""

    def __init__(self, guard: UrlGuard, timeout: float) -> None:
        self._guard = guard
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self._timeout,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def post(
        self, url: str, secret: str, event: str, delivery: str, body: bytes
    ) -> tuple[Outcome, int | None]:
        """One attempt; the outcome, and the target's HTTP status if it answered."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._post(url, secret, event, delivery, body)
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(State.PENDING, error=f"no answer within {self._timeout:g}s"), None
        except UrlRefused as exc:
            return Outcome(State.PENDING if exc.temporary else State.FAILED, error=exc.message), None
        except httpx.InvalidURL as exc:
            return Outcome(State.FAILED, error=f"the URL cannot be called: {exc}"), None
        except httpx.HTTPError as exc:
            return Outcome(State.PENDING, error=f"{type(exc).__name__}: {exc}"), None

    async def _post(
        self, url: str, secret: str, event: str, delivery: str, body: bytes
    ) -> tuple[Outcome, int | None]:
        client = self._client
        if client is None:
            raise RuntimeError("HttpSender.start() was not called")
        addresses = await self._guard.check(url)
        target = httpx.URL(url)
        headers = {
            "Host": target.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            "X-Pushgate-Event": event,
            "X-Pushgate-Delivery": delivery,
            "X-Pushgate-Signature": sign(secret, body),
        }
        extensions: dict[str, Any] = {}
        if target.scheme == "https":
            extensions["sni_hostname"] = target.raw_host.decode("ascii")
        for address in addresses[:-1]:
            try:
                return await self._send(client, target.copy_with(host=address), body, headers, extensions)
            except httpx.ConnectError:
                continue  # the host's next address
        return await self._send(client, target.copy_with(host=addresses[-1]), body, headers, extensions)

    @classmethod
    async def _send(
        cls,
        client: httpx.AsyncClient,
        pinned: httpx.URL,
        body: bytes,
        headers: dict[str, str],
        extensions: dict[str, Any],
    ) -> tuple[Outcome, int | None]:
        request = client.build_request("POST", pinned, content=body, headers=headers, extensions=extensions)
        response = await client.send(request, stream=True)
        await response.aclose()  # the body is not read: a target cannot make us hold a large one
        return cls._outcome(response), response.status_code

    @staticmethod
    def _outcome(response: httpx.Response) -> Outcome:
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(State.SENT)
        if status in (408, 429) or status >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            return Outcome(State.PENDING, error=f"HTTP {status}", retry_after=retry_after)
        why = "redirects are not followed" if 300 <= status < 400 else "a 4xx other than 408 and 429"
        return Outcome(State.FAILED, error=f"HTTP {status}, not retried: {why}")


class WebhookChannel:
    """Delivers webhook and callback rows; the target's URL and secret are read at each attempt, so a
    webhook changed, deactivated or deleted meanwhile is honoured."""

    name = "webhook"

    def __init__(
        self,
        sessions: async_sessionmaker[Any],
        sender: HttpSender,
        callback_secret: Callable[[str | None], str],
    ) -> None:
        self._sessions = sessions
        self._sender = sender
        self._callback_secret = callback_secret

    async def subscribers(self, topic: str) -> int:
        return 0  # not a broadcast channel: nothing to count for a push answer

    async def deliver(self, job: Job) -> Outcome:
        target = await self._target(job)
        if isinstance(target, Outcome):
            return target
        url, secret = target
        outcome, _ = await self._sender.post(
            url, secret, job.event, delivery_id(job.message_id, job.delivery_id), job.payload
        )
        return outcome

    async def _target(self, job: Job) -> tuple[str, str] | Outcome:
        async with self._sessions() as session:
            if job.target == CALLBACK:
                row = (
                    await session.execute(
                        select(Message.callback_url, Topic.owner_id)
                        .join(Topic, Topic.id == Message.topic_id)
                        .where(Message.id == job.message_id)
                    )
                ).first()
                if row is None or not row.callback_url:
                    return Outcome(State.FAILED, error="the message has no callback_url")
                return row.callback_url, self._callback_secret(row.owner_id)
            hook = await session.get(Webhook, job.target)
        if hook is None:
            return Outcome(State.FAILED, error="the webhook was deleted")
        if not hook.active:
            return Outcome(State.FAILED, error="the webhook was deactivated")
        return hook.url, hook.secret
