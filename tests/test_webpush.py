"""Web Push (issue 5, acceptance 1, 2 and 4): the real gateway delivers to a real Web Push service on
loopback (``tests/webpush_service.py``: TLS from a test CA, VAPID checked, payload decrypted with the
subscriber's keys), with receipts, expiry on 410, retries on 429/5xx, and no loss across SIGKILL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import stat
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trustme
from sqlalchemy import select

from gateway.admin import Admin
from gateway.channels.webpush import MAX_PLAINTEXT, build_payload, retry_after_seconds
from gateway.config import Config, StorageConfig, WebPushConfig
from gateway.errors import ConfigError
from gateway.storage import database
from gateway.storage.models import Delivery
from gateway.vapid import JWT_LIFETIME, KEY_FILE, RESIGN_BEFORE, VapidTokens, load_vapid_key
from tests.conftest import TIMEOUT, Server, until, user
from tests.process import gateway_env, helpers, pushgate, running, start_gateway
from tests.webpush_service import PushService, unb64url

T = TypeVar("T")
PAYLOAD_KEYS = {
    "id",
    "receipt_id",
    "topic",
    "title",
    "message",
    "priority",
    "tags",
    "click_url",
    "icon",
    "actions",
    "timestamp",
    "truncated",
}
FAN_OUT = 500
KILL_AT = 150  # requests the service answers before it holds the rest and the gateway is SIGKILLed


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "push-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def config(config: Config, ca_file: str) -> Config:
    """The gateway trusts the test CA and may reach the service on loopback; short backoff."""
    webpush = WebPushConfig(
        subject="mailto:ops@example.org",
        allowed_hosts=("127.0.0.1",),
        ca_file=ca_file,
        backoff_base=0.05,
        backoff_max=5.0,
    )
    return dataclasses.replace(config, webpush=webpush)


@pytest.fixture
async def service(ca: trustme.CA) -> AsyncIterator[PushService]:
    push = PushService(ca)
    await push.start()
    try:
        yield push
    finally:
        await push.close()


async def _advertised_key(http: httpx.AsyncClient, service: PushService) -> str:
    response = await http.get("/api/webpush/vapid-public-key")
    assert response.status_code == 200
    key: str = response.json()["public_key"]
    service.vapid_public_key = key
    return key


async def _register(http: httpx.AsyncClient, headers: dict[str, str], service: PushService, id: str) -> str:
    sub = service.add(id)
    response = await http.post(
        "/api/devices",
        json={"platform": "web", "subscription": sub.subscription(service.origin), "device_name": id},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _receipt(http: httpx.AsyncClient, headers: dict[str, str], receipt_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/receipts/{receipt_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _deliveries(config: Config, message_id: str) -> dict[str, Delivery]:
    """The outbox rows of ``message_id`` per device, read through a fresh engine as an operator would."""
    engine = database.create_engine(config.storage)
    try:
        async with database.session_factory(engine)() as session:
            rows = await session.scalars(
                select(Delivery).where(Delivery.message_id == message_id, Delivery.channel == "webpush")
            )
            return {row.target: row for row in rows}
    finally:
        await engine.dispose()


async def test_the_service_verifies_vapid_and_decrypts_what_was_sent(
    server: Server, admin: Admin, http: httpx.AsyncClient, service: PushService
) -> None:
    alice = await user(admin, "alice")
    await admin.create_topic("door", owner="alice")
    key = await _advertised_key(http, service)
    point = unb64url(key)
    assert len(point) == 65 and point[0] == 4 and "=" not in key  # what applicationServerKey takes
    key_file = Path(server.config.storage.data_dir) / KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    await _register(http, alice, service, "laptop")

    actions = [{"id": "open", "label": "Open", "type": "button"}]
    pushed = await http.post(
        "/api/push/door",
        json={
            "title": "Front door",
            "message": "Someone rang — twice",
            "priority": "high",
            "tags": ["bell"],
            "click_url": "https://home.example/cam",
            "icon_url": "https://home.example/bell.png",
            "actions": actions,
            "ttl": 600,
        },
        headers=alice,
    )
    assert pushed.status_code == 200, pushed.text
    answer = pushed.json()
    assert answer["subscribers"] == 1  # the push answer counts the device target

    await service.wait_for(lambda: service.received, "the Web Push request")
    assert service.errors == []
    [request] = service.received
    assert request.status == 201
    payload = request.payload
    assert payload is not None and set(payload) == PAYLOAD_KEYS
    assert payload["title"] == "Front door" and payload["message"] == "Someone rang — twice"
    assert payload["id"] == answer["id"] and payload["receipt_id"] == answer["receipt_id"]
    assert payload["topic"] == "door" and payload["priority"] == "high" and payload["tags"] == ["bell"]
    assert payload["click_url"] == "https://home.example/cam"
    assert payload["icon"] == "https://home.example/bell.png"
    assert payload["actions"] == actions and payload["truncated"] is False
    assert request.claims is not None and request.claims["sub"] == "mailto:ops@example.org"
    assert request.headers["urgency"] == "high"
    assert 590 <= int(request.headers["ttl"]) <= 600  # what is left of the message's ttl

    receipt = await until(
        lambda: _ready(_receipt(http, alice, answer["receipt_id"]), "delivered"),
        "the receipt to be delivered",
    )
    assert receipt["delivered_count"] == 1


async def _ready(receipt: Any, status: str) -> dict[str, Any] | None:
    body: dict[str, Any] = await receipt
    return body if body["status"] == status else None


async def test_a_410_expires_the_device_and_it_gets_no_second_request(
    server: Server, admin: Admin, http: httpx.AsyncClient, service: PushService
) -> None:
    alice = await user(admin, "alice")
    await admin.create_topic("door", owner="alice")
    await _advertised_key(http, service)
    gone = await _register(http, alice, service, "gone")
    await _register(http, alice, service, "witness")
    service.answer("gone", (410, {}))

    first = await http.post("/api/push/door", json={"message": "first"}, headers=alice)
    assert first.json()["subscribers"] == 2

    async def expired() -> bool:
        devices = (await http.get("/api/devices", headers=alice)).json()["devices"]
        return any(d["id"] == gone and d["status"] == "expired" for d in devices)

    async def failed() -> Delivery | None:
        row = (await _deliveries(server.config, first.json()["id"]))[gone]
        return row if row.state == "failed" else None

    await until(expired, "the device to be expired")
    row = await until(failed, "the delivery to be recorded as failed")
    assert row.attempts == 1 and "410" in (row.last_error or "")

    second = await http.post("/api/push/door", json={"message": "second"}, headers=alice)
    assert second.json()["subscribers"] == 1  # only the witness is a target now
    await service.wait_for(
        lambda: any(r.payload and r.payload["message"] == "second" for r in service.requests_for("witness")),
        "the second message at the witness",
    )
    assert len(service.requests_for("gone")) == 1
    assert service.errors == []


async def test_429_and_503_are_retried_with_backoff_then_delivered(
    server: Server, admin: Admin, http: httpx.AsyncClient, service: PushService
) -> None:
    alice = await user(admin, "alice")
    await admin.create_topic("door", owner="alice")
    await _advertised_key(http, service)
    device = await _register(http, alice, service, "flaky")
    service.answer("flaky", (429, {"Retry-After": "1"}), (503, {}))

    pushed = (await http.post("/api/push/door", json={"message": "retry me"}, headers=alice)).json()
    await service.wait_for(lambda: len(service.requests_for("flaky")) == 3, "three attempts")
    first, second, third = service.requests_for("flaky")
    assert [first.status, second.status, third.status] == [429, 503, 201]
    assert second.at - first.at >= 1.0  # Retry-After: 1 was honoured
    assert third.at - second.at >= 0.05  # backoff after the 2nd failure: base 0.05 * 2, jittered to >= half
    assert third.payload is not None and third.payload["message"] == "retry me"

    receipt = await until(
        lambda: _ready(_receipt(http, alice, pushed["receipt_id"]), "delivered"),
        "the receipt to be delivered",
    )
    assert receipt["delivered_count"] == 1
    row = (await _deliveries(server.config, pushed["id"]))[device]
    assert row.state == "sent" and row.attempts == 3
    assert service.errors == []


async def test_other_4xx_fails_at_once_without_expiring_the_device(
    server: Server, admin: Admin, http: httpx.AsyncClient, service: PushService
) -> None:
    alice = await user(admin, "alice")
    await admin.create_topic("door", owner="alice")
    await _advertised_key(http, service)
    device = await _register(http, alice, service, "refused")
    service.answer("refused", (403, {}))

    pushed = (await http.post("/api/push/door", json={"message": "nope"}, headers=alice)).json()

    async def failed() -> Delivery | None:
        row = (await _deliveries(server.config, pushed["id"]))[device]
        return row if row.state == "failed" else None

    row = await until(failed, "the delivery to fail")
    assert row.attempts == 1 and "403" in (row.last_error or "")
    # The MQTT delivery still waits for a subscriber, so the receipt is not failed: nothing was delivered.
    receipt = await _receipt(http, alice, pushed["receipt_id"])
    assert receipt["status"] == "queued" and receipt["delivered_count"] == 0
    assert len(service.requests_for("refused")) == 1
    devices = (await http.get("/api/devices", headers=alice)).json()["devices"]
    assert devices[0]["status"] == "active"  # only 404/410 expire a device


async def test_a_loopback_push_service_is_refused_unless_allowed(
    config: Config, admin: Admin, service: PushService
) -> None:
    """The SSRF rule of webhooks: without [webpush] allowed_hosts, 127.0.0.1 is not called."""
    from gateway.serve import serve

    strict = dataclasses.replace(config, webpush=dataclasses.replace(config.webpush, allowed_hosts=()))
    stop = asyncio.Event()
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(strict, shutdown_trigger=stop.wait, on_ready=ready.set_result))
    try:
        endpoints = await asyncio.wait_for(ready, TIMEOUT)
        async with httpx.AsyncClient(base_url=endpoints.http, timeout=TIMEOUT) as http:
            alice = await user(admin, "alice")
            await admin.create_topic("door", owner="alice")
            await _advertised_key(http, service)
            device = await _register(http, alice, service, "local")
            pushed = (await http.post("/api/push/door", json={"message": "x"}, headers=alice)).json()

            async def refused() -> Delivery | None:
                row = (await _deliveries(strict, pushed["id"]))[device]
                return row if row.state == "failed" else None

            row = await until(refused, "the refusal")
        assert "loopback" in (row.last_error or "") and "[webpush] allowed_hosts" in (row.last_error or "")
        assert service.received == []
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


def test_the_vapid_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = load_vapid_key(WebPushConfig(), str(tmp_path))
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600
    assert load_vapid_key(WebPushConfig(), str(tmp_path)).public_key == first.public_key
    pem = (tmp_path / KEY_FILE).read_text()
    assert load_vapid_key(WebPushConfig(vapid_private_key=pem), "/nonexistent").public_key == first.public_key
    raw = "YK1VAgUeJ0Y9vnr27g9uZoNY4WrJqoWYq5DGZJs0t_s"  # a raw 32-byte key, base64url
    given = load_vapid_key(WebPushConfig(vapid_private_key=raw), "/nonexistent")
    assert len(unb64url(given.public_key)) == 65
    with pytest.raises(ConfigError, match="32 bytes"):
        load_vapid_key(WebPushConfig(vapid_private_key="c2hvcnQ"), "/nonexistent")


def _claims(header: str) -> dict[str, Any]:
    """The claims of an ``Authorization: vapid t=<JWT>,k=<key>`` header's token."""
    token = header.removeprefix("vapid t=").split(",")[0]
    return json.loads(unb64url(token.split(".")[1]))  # type: ignore[no-any-return]


def test_a_vapid_token_is_signed_once_per_origin_and_renewed_an_hour_before_it_expires(
    tmp_path: Path,
) -> None:
    tokens = VapidTokens(load_vapid_key(WebPushConfig(), str(tmp_path)), "mailto:ops@example.org")
    now = 1_800_000_000.0
    first = tokens.header("https://push.example", now)
    assert _claims(first) == {
        "sub": "mailto:ops@example.org",
        "aud": "https://push.example",
        "exp": int(now) + JWT_LIFETIME,
    }
    last_use = now + JWT_LIFETIME - RESIGN_BEFORE
    assert tokens.header("https://push.example", last_use) == first  # reused, not signed again
    other = tokens.header("https://other.example:8443", now)
    assert _claims(other)["aud"] == "https://other.example:8443"  # never another origin's token
    renewed = tokens.header("https://push.example", last_use + 1)
    assert renewed != first and _claims(renewed)["exp"] == int(last_use + 1) + JWT_LIFETIME
    assert _claims(renewed)["aud"] == "https://push.example"


def test_a_long_message_is_shortened_to_fit_and_marked() -> None:
    envelope = {"id": "m", "receipt_id": "r", "topic": "t", "title": "T", "message": "é" * 4000}
    data = build_payload(envelope, None)
    assert data is not None and len(data) <= MAX_PLAINTEXT
    body = json.loads(data)
    assert body["truncated"] is True and body["message"] and set(body["message"]) == {"é"}
    short = json.loads(build_payload({"message": "short"}, "i") or b"")
    assert short["truncated"] is False and short["message"] == "short" and short["icon"] == "i"


def test_retry_after_is_seconds_or_an_http_date() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("30", now) == 30.0
    assert retry_after_seconds("Fri, 04 Dec 2026 12:01:00 GMT", now) == 60.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None


@pytest.mark.timeout(150)  # two gateway starts, 500 registrations over HTTP and 500+ TLS requests: ~30 s
async def test_sigkill_mid_fan_out_loses_no_device_and_resends_only_unrecorded(
    tmp_path: Path, ca_file: str, service: PushService
) -> None:
    """Acceptance 4: SIGKILL while 500 devices are being sent to; after the restart every device has the
    message, and each got exactly one request per successful attempt recorded in the deliveries table,
    plus at most one more only if its first send was not recorded before the kill."""
    data_dir = tmp_path / "data"
    env = gateway_env(
        data_dir,
        PUSHGATE_WEBPUSH_CA_FILE=ca_file,
        PUSHGATE_WEBPUSH_ALLOWED_HOSTS="127.0.0.1",
    )
    code, out, _ = await pushgate(env, "user", "create", "alice")
    assert code == 0
    token = next(word for word in out.split() if word.startswith("pt_"))
    alice = {"Authorization": f"Bearer {token}"}
    assert (await pushgate(env, "topic", "create", "alarm", "--owner", "alice"))[0] == 0
    storage = Config(storage=StorageConfig(data_dir=str(data_dir)))

    first = await start_gateway(env)
    try:
        async with httpx.AsyncClient(base_url=first.http_url, timeout=TIMEOUT) as http:
            await _advertised_key(http, service)
            ids = [f"d{i:03d}" for i in range(FAN_OUT)]
            for start in range(0, FAN_OUT, 25):
                await asyncio.gather(*(_register(http, alice, service, i) for i in ids[start : start + 25]))
            service.hold_after = KILL_AT  # the fan-out stalls there: later requests get no answer
            pushed = await http.post("/api/push/alarm", json={"message": "fire drill"}, headers=alice)
            assert pushed.status_code == 200 and pushed.json()["subscribers"] == FAN_OUT
            message_id = pushed.json()["id"]
            receipt_id = pushed.json()["receipt_id"]
        # The service has answered KILL_AT requests and holds the rest; some answered sends are recorded
        # (the outbox records them in batches), the held ones cannot be.
        await service.wait_for(lambda: len(service.received) > KILL_AT, "the fan-out to reach the hold")
        await until(lambda: _sent_rows(storage, message_id), "some sends to be recorded")
        pid = first.proc.pid
        started = await until(
            lambda: _now("gateway.channels.webpush_ecdh" in helpers(pid).values()), "the key agreement helper"
        )
        assert started
        running_helpers = list(helpers(pid))  # the key agreement helper and the storage journal
        first.proc.kill()  # SIGKILL, mid fan-out
        await asyncio.wait_for(first.proc.wait(), TIMEOUT)
        await until(
            lambda: _now(not any(running(pid) for pid in running_helpers)), "the helpers to end with it"
        )
    finally:
        assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
        service.release()
    runner = service._runner
    assert runner is not None and runner.server is not None
    server = runner.server
    await until(lambda: _now(not server.connections), "the killed gateway's connections to close")
    at_kill = await _deliveries(storage, message_id)
    sent_before = Counter(r.subscriber for r in service.received)
    recorded = {device for device, row in at_kill.items() if row.state == "sent"}
    assert KILL_AT <= len(service.received) < FAN_OUT, f"not mid fan-out: {len(service.received)}"
    assert 0 < len(recorded) < FAN_OUT

    second = await start_gateway(env)
    try:
        async with httpx.AsyncClient(base_url=second.http_url, timeout=TIMEOUT) as http:
            receipt = await until(
                lambda: _delivered_to(_receipt(http, alice, receipt_id), FAN_OUT), "every device confirmed"
            )
    finally:
        await second.stop(signal.SIGTERM)

    final = await _deliveries(storage, message_id)
    device_of = {row.target: row for row in final.values()}
    got = Counter(r.subscriber for r in service.received)
    assert service.errors == []
    assert set(got) == set(service.subscribers), "a device is missing the message"
    assert all(r.payload and r.payload["id"] == message_id for r in service.received)
    assert all(row.state == "sent" and row.attempts == 1 for row in device_of.values())
    assert receipt["delivered_count"] == FAN_OUT
    by_name = await _device_names(storage)
    for device_id, row in final.items():
        name = by_name[device_id]
        if device_id in recorded:  # its send was recorded before the kill: never sent again
            assert got[name] == 1 == sent_before[name], name
        else:  # not recorded: one recorded attempt after the restart, plus the unrecorded one, if any
            assert got[name] == row.attempts + sent_before[name], name
            assert sent_before[name] <= 1, name


async def _sent_rows(config: Config, message_id: str) -> int:
    return sum(row.state == "sent" for row in (await _deliveries(config, message_id)).values())


async def _now(value: T) -> T:
    """``value`` as an awaitable, for ``until``."""
    return value


async def _delivered_to(receipt: Any, count: int) -> dict[str, Any] | None:
    body: dict[str, Any] = await receipt
    return body if body["delivered_count"] >= count else None


async def _device_names(config: Config) -> dict[str, str]:
    from gateway.storage.models import Device

    engine = database.create_engine(config.storage)
    try:
        async with database.session_factory(engine)() as session:
            return {d.id: d.device_name for d in await session.scalars(select(Device))}
    finally:
        await engine.dispose()
