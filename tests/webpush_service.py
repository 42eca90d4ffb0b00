"""A Web Push service on 127.0.0.1 that speaks the real protocol, for tests and the fan-out benchmark.

It plays both ends a browser relies on: the push service (RFC 8030: ``POST /push/<id>`` over TLS,
answering 201) and the browser holding each subscription's private key, so it can check what pushgate
sent the way a real browser would:

- ``Authorization: vapid t=<JWT>, k=<key>`` (RFC 8292): ``k`` is the key pushgate advertises, the JWT's
  ES256 signature verifies with it, ``aud`` is this service's origin, ``exp`` is in the future and at most
  24 hours away, ``sub`` is present;
- the body is ``Content-Encoding: aes128gcm`` (RFC 8291), decrypted with the subscriber's P-256 private
  key and auth secret (``http_ece``), and must be JSON; ``TTL`` and ``Urgency`` are kept for the test.

Answers can be scripted per subscription (``answer``): a list of statuses (with headers) given before
the default 201. Every request is recorded (``received``); a check that fails is recorded in ``errors``
and answered 400, so a test asserts ``errors == []``. Waiting is on a condition (``wait_for``).

Run as a script (``python tests/webpush_service.py --ca-cert CA.pem --ca-key KEY.pem``) it serves in
benchmark mode: every POST to ``/push/<id>`` is answered 201 without decrypting (the client's cost is
measured, not this one's); ``GET /stats`` reports the count and the first and last arrival times
(``time.monotonic()``), ``DELETE /stats`` starts counting again. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import http_ece
import trustme
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["PushService", "Received", "Subscriber", "b64url", "unb64url"]

WAIT = 10.0  # seconds a wait_for may take


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Subscriber:
    """A browser's subscription: the keys it generated, as ``PushSubscription.toJSON()`` shows them."""

    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @classmethod
    def new(cls, id: str) -> Subscriber:
        return cls(id, ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    def subscription(self, origin: str) -> dict[str, Any]:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": f"{origin}/push/{self.id}",
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }


@dataclass
class Received:
    subscriber: str
    status: int  # what the service answered
    headers: dict[str, str]  # names in lower case
    payload: dict[str, Any] | None  # the decrypted JSON
    claims: dict[str, Any] | None  # the verified VAPID claims
    at: float  # time.monotonic() of arrival


@dataclass
class PushService:
    ca: trustme.CA
    verify: bool = True  # False: the benchmark mode, count only
    vapid_public_key: str | None = None  # the key pushgate advertises; required in ``k``
    subscribers: dict[str, Subscriber] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    on_request: Callable[[Received], None] | None = None  # called before the answer goes out
    hold_after: int | None = None  # requests after this many are recorded but not answered until release()
    _answers: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    origin: str = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/push/{id}", self._push)
        app.router.add_get("/stats", self._stats)
        app.router.add_delete("/stats", self._reset)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(tls)
        await web.SockSite(self._runner, sock, ssl_context=tls, backlog=1024).start()
        self.origin = f"https://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def add(self, id: str) -> Subscriber:
        subscriber = Subscriber.new(id)
        self.subscribers[id] = subscriber
        return subscriber

    def answer(self, id: str, *answers: tuple[int, dict[str, str]]) -> None:
        """Answer the next requests for ``id`` with these statuses and headers, then 201."""
        self._answers.setdefault(id, []).extend(answers)

    def release(self) -> None:
        """Answer the requests held by ``hold_after``, and every later one at once."""
        self.hold_after = None
        self._released.set()

    def requests_for(self, id: str) -> list[Received]:
        return [r for r in self.received if r.subscriber == id]

    async def wait_for(self, check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        """Wait until ``check()`` is truthy, re-checked at every request the service records."""
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    return await self._changed.wait_for(check)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}") from None

    async def _stats(self, _request: web.Request) -> web.Response:
        times = [r.at for r in self.received]
        return web.json_response(
            {"count": len(times), "first": min(times, default=None), "last": max(times, default=None)}
        )

    async def _reset(self, _request: web.Request) -> web.Response:
        self.received.clear()
        return web.json_response({"count": 0})

    async def _push(self, request: web.Request) -> web.Response:
        id = request.match_info["id"]
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        status, extra = 201, {}
        payload = claims = None
        if self.verify:
            try:
                claims = self._check_vapid(request.headers.get("Authorization", ""))
                payload = self._decrypt(id, request.headers, body)
            except (AssertionError, ValueError, InvalidSignature, KeyError) as exc:
                self.errors.append(f"{id}: {type(exc).__name__}: {exc}")
                status = 400
        queued = self._answers.get(id)
        if status == 201 and queued:
            status, extra = queued.pop(0)
        received = Received(id, status, headers, payload, claims, time.monotonic())
        self.received.append(received)
        if self.on_request is not None:
            self.on_request(received)
        async with self._changed:
            self._changed.notify_all()
        if self.hold_after is not None and len(self.received) > self.hold_after:
            await self._released.wait()
        return web.Response(status=status, headers=extra, text="" if status < 300 else f"status {status}")

    def _check_vapid(self, authorization: str) -> dict[str, Any]:
        scheme, _, rest = authorization.partition(" ")
        assert scheme.lower() == "vapid", f"Authorization scheme {scheme!r}, not vapid"
        parts = dict(item.strip().split("=", 1) for item in rest.split(","))
        token, key = parts["t"], parts["k"]
        assert key == self.vapid_public_key, "k is not the key pushgate advertises"
        head, claims_part, signature = token.split(".")
        assert json.loads(unb64url(head)) == {"typ": "JWT", "alg": "ES256"}, "JWT header"
        raw = unb64url(signature)
        assert len(raw) == 64, "an ES256 signature is r || s, 64 bytes"
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        public.verify(der, f"{head}.{claims_part}".encode(), ec.ECDSA(hashes.SHA256()))
        claims: dict[str, Any] = json.loads(unb64url(claims_part))
        assert claims.get("aud") == self.origin, f"aud {claims.get('aud')!r} is not {self.origin}"
        now = time.time()
        assert now < claims["exp"] <= now + 24 * 3600, "exp must be in the future, within 24 hours"
        assert claims.get("sub"), "sub is missing"
        return claims

    def _decrypt(self, id: str, headers: Any, body: bytes) -> dict[str, Any]:
        assert headers.get("Content-Encoding") == "aes128gcm", "Content-Encoding is not aes128gcm"
        assert headers.get("TTL", "").isdigit(), "TTL header missing"
        subscriber = self.subscribers[id]
        plain = http_ece.decrypt(
            body, private_key=subscriber.private_key, auth_secret=subscriber.auth, version="aes128gcm"
        )
        result: dict[str, Any] = json.loads(plain)
        return result


async def _serve_benchmark(ca_cert: str, ca_key: str) -> None:
    ca = trustme.CA.from_pem(open(ca_cert, "rb").read(), open(ca_key, "rb").read())
    service = PushService(ca, verify=False)
    await service.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"webpush service ready: {service.origin}", flush=True)
    try:
        await stop.wait()
    finally:
        await service.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ca-cert", required=True)
    parser.add_argument("--ca-key", required=True)
    args = parser.parse_args()
    asyncio.run(_serve_benchmark(args.ca_cert, args.ca_key))
