"""Webhooks and callback_url (issue "Two-way notifications"): the management API, signed deliveries of the
action, delivered, read and expired events, retries with backoff until dead, a restart in the middle, the
test event, and the SSRF rules.

Targets are real HTTP/1.1 servers on 127.0.0.1 (``Target``: asyncio streams, no mock); the tests allow
127.0.0.1 through ``[webhooks] allowed_hosts``, as an operator would for a hub on the same machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.access import Principal
from gateway.actions import ActionReport
from gateway.admin import Admin
from gateway.channels.webhook import UrlGuard, UrlRefused
from gateway.config import Config, WebhooksConfig
from gateway.core import Gateway
from gateway.errors import Unauthorized
from gateway.outbox import RetryPolicy
from gateway.request import PushRequest
from tests.conftest import TIMEOUT, MqttClient, Server, assert_error, bearer, serving, until, user

ACTIONS = [
    {"id": "approve", "label": "Approve", "type": "button"},
    {"id": "reject", "label": "Reject", "type": "button", "destructive": True},
]
BACKOFF_BASE = 0.05  # seconds: the tests' tiny backoff, so three attempts take a fraction of a second


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # loop time of arrival

    def json(self) -> Any:
        return json.loads(self.body)

    def verifies(self, secret: str) -> bool:
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers["x-pushgate-signature"], expected)


class Target:
    """A webhook receiver: a minimal HTTP/1.1 server that records each request and answers the next of
    ``statuses``, then ``default``. Each connection carries one request (``Connection: close``)."""

    def __init__(self, statuses: list[int] | None = None, default: int = 200) -> None:
        self.statuses = list(statuses or [])
        self.default = default
        self.requests: asyncio.Queue[Received] = asyncio.Queue()
        self.hold: asyncio.Event | None = None  # when set: each answer waits for this event
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, sock: socket.socket | None = None) -> Target:
        if sock is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        else:
            self._server = await asyncio.start_server(self._handle, sock=sock)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/hooks/pushgate") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def next(self) -> Received:
        return await asyncio.wait_for(self.requests.get(), TIMEOUT)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            method, path, _version = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                if line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            assert method == "POST", method
            status = self.statuses.pop(0) if self.statuses else self.default
            self.requests.put_nowait(Received(path, headers, body, asyncio.get_running_loop().time()))
            if self.hold is not None:
                await self.hold.wait()
            writer.write(
                f"HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def allowed_hosts() -> tuple[str, ...]:
    return ("127.0.0.1",)


@pytest.fixture
def config(config: Config, allowed_hosts: tuple[str, ...]) -> Config:
    return dataclasses.replace(
        config,
        webhooks=WebhooksConfig(
            allowed_hosts=allowed_hosts,
            timeout=5.0,
            max_attempts=3,
            backoff_base=BACKOFF_BASE,
            backoff_max=0.4,
        ),
    )


@pytest.fixture
async def targets() -> AsyncIterator[Callable[..., Awaitable[Target]]]:
    started: list[Target] = []

    async def make(statuses: list[int] | None = None, default: int = 200) -> Target:
        target = await Target(statuses, default).start()
        started.append(target)
        return target

    yield make
    for target in started:
        await target.close()


async def owned_topic(http: httpx.AsyncClient, auth: dict[str, str], name: str = "ops") -> str:
    response = await http.post("/api/topics", json={"name": name, "is_private": True}, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def create_webhook(http: httpx.AsyncClient, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await http.post("/api/webhooks", json=fields, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def deliveries(http: httpx.AsyncClient, auth: dict[str, str], hook_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/api/webhooks/{hook_id}/deliveries", headers=auth)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]  # type: ignore[no-any-return]


async def push(http: httpx.AsyncClient, auth: dict[str, str], topic: str = "ops", **fields: Any) -> Any:
    body = {"message": "Release v2.1.0 to production?", "actions": ACTIONS, **fields}
    response = await http.post(f"/api/push/{topic}", json=body, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


# -- the management API ------------------------------------------------------------------------------


async def test_crud_with_a_secret_shown_once(
    server: Server, admin: Admin, http: httpx.AsyncClient, targets: Any
) -> None:
    auth = await user(admin, "alice")
    ops = await owned_topic(http, auth)
    target = await targets()

    created = await create_webhook(http, auth, url=target.url(), events=["action", "delivered"])
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 30
    assert uuid.UUID(created["id"])
    assert {k: created[k] for k in ("url", "events", "topic_ids", "active")} == {
        "url": target.url(),
        "events": ["action", "delivered"],
        "topic_ids": [],
        "active": True,
    }

    listed = (await http.get("/api/webhooks", headers=auth)).json()["webhooks"]
    assert listed == [{k: v for k, v in created.items() if k != "secret"}]  # never the secret again

    response = await http.patch(
        f"/api/webhooks/{created['id']}/",
        json={"events": ["all"], "topic_ids": ["ops"], "active": False, "id": created["id"]},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["events"], updated["topic_ids"], updated["active"]) == (["all"], [ops], False)
    assert "secret" not in updated

    # Unknown fields are refused, naming them; the secret cannot be chosen.
    bad = {"url": target.url(), "events": ["action"], "evnets": ["read"]}
    assert_error(await http.post("/api/webhooks", json=bad, headers=auth), 400, "evnets")
    patch_url = f"/api/webhooks/{created['id']}"
    assert_error(await http.patch(patch_url, json={"actve": True}, headers=auth), 400, "actve")
    assert_error(await http.patch(patch_url, json={"secret": "mine"}, headers=auth), 400, "secret")
    for fields, field in [
        ({"events": ["action"]}, "url"),
        ({"url": "ftp://hub.lan/x", "events": ["action"]}, "url"),
        ({"url": target.url()}, "events"),
        ({"url": target.url(), "events": []}, "events"),
        ({"url": target.url(), "events": ["action", "tapped"]}, "events"),
        ({"url": target.url(), "events": "all"}, "events"),
        ({"url": target.url(), "events": ["all"], "topic_ids": ["nope"]}, "topic_ids"),
        ({"url": target.url(), "events": ["all"], "active": "yes"}, "active"),
    ]:
        assert_error(await http.post("/api/webhooks", json=fields, headers=auth), 400, field)

    # Another user sees none of it: a foreign id answers like an unknown one.
    bob = await user(admin, "bob")
    bob_topic = await owned_topic(http, bob, "bobs")
    assert (await http.get("/api/webhooks", headers=bob)).json() == {"webhooks": []}
    foreign = assert_error(await http.patch(patch_url, json={"active": True}, headers=bob), 404)
    unknown = assert_error(
        await http.patch("/api/webhooks/01a20000-0000-7000-8000-000000000000", json={}, headers=auth), 404
    )
    assert foreign["error"] == unknown["error"] == "Webhook not found"
    assert_error(await http.delete(patch_url, headers=bob), 404)
    assert_error(await http.post(f"{patch_url}/test", headers=bob), 404)
    assert_error(await http.get(f"{patch_url}/deliveries", headers=bob), 404)
    fields = {"url": target.url(), "events": ["all"], "topic_ids": [bob_topic]}
    assert_error(await http.post("/api/webhooks", json=fields, headers=auth), 400, "topic_ids")

    # A user token is needed: none, or a topic key, is 401.
    key = (await admin.create_key("ops")).secret
    assert_error(await http.get("/api/webhooks"), 401)
    assert_error(await http.get("/api/webhooks", headers=bearer(key)), 401)

    # At most ten per user.
    for _ in range(9):
        await create_webhook(http, auth, url=target.url(), events=["read"])
    response = await http.post("/api/webhooks", json={"url": target.url(), "events": ["read"]}, headers=auth)
    assert_error(response, 409)
    await create_webhook(http, bob, url=target.url(), events=["read"])  # the limit is per user

    response = await http.delete(patch_url, headers=auth)
    assert response.status_code == 200 and response.json() == {"id": created["id"], "deleted": True}
    assert len((await http.get("/api/webhooks/", headers=auth)).json()["webhooks"]) == 9
    assert_error(await http.get(f"{patch_url}/deliveries", headers=auth), 404)
    mine = (await http.get("/api/webhooks", headers=auth)).json()["webhooks"][0]["id"]
    assert_error(await http.get(f"/api/webhooks/{mine}/deliveries?limit=abc", headers=auth), 400, "limit")
    assert_error(await http.get(f"/api/webhooks/{mine}/deliveries?state=lost", headers=auth), 400, "state")


@pytest.mark.parametrize("allowed_hosts", [()])
async def test_ssrf_refusals_without_allowed_hosts(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    auth = await user(admin, "alice")
    for url, reason in [
        ("http://127.0.0.1:8123/hook", "loopback"),
        ("http://localhost:8123/hook", "loopback"),
        ("http://[::1]:8123/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[fe80::1]/hook", "link-local"),
        ("http://0.0.0.0:8080/hook", "unspecified"),
        ("http://does-not-resolve.invalid/hook", "does not resolve"),
    ]:
        response = await http.post("/api/webhooks", json={"url": url, "events": ["action"]}, headers=auth)
        body = assert_error(response, 400, "url")
        assert reason in body["message"], (url, body)
    # Private LAN ranges are fine: a home hub.
    for url in ("http://192.168.1.50:8123/api/webhook/pushgate", "https://10.0.0.7/hook"):
        await create_webhook(http, auth, url=url, events=["action"])
    hook = (await http.get("/api/webhooks", headers=auth)).json()["webhooks"][0]
    response = await http.patch(
        f"/api/webhooks/{hook['id']}", json={"url": "http://127.0.0.1/"}, headers=auth
    )
    assert_error(response, 400, "url")


async def test_allowed_hosts_let_a_local_hub_in_but_nothing_else(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    auth = await user(admin, "alice")
    await create_webhook(http, auth, url="http://127.0.0.1:8123/hook", events=["action"])
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[::1]:8123/hook"):
        response = await http.post("/api/webhooks", json={"url": url, "events": ["action"]}, headers=auth)
        assert_error(response, 400, "url")


async def test_the_gateways_own_listen_address_is_refused() -> None:
    guard = UrlGuard(allowed_hosts=(), listen_hosts=("192.0.2.10", "127.0.0.1"))
    with pytest.raises(UrlRefused, match="own listen address"):
        await guard.check("http://192.0.2.10:8080/api/push/ops")
    assert await guard.check("http://192.0.2.11:8080/hook") == ["192.0.2.11"]
    # Listening on every address, every address of this machine is the gateway's own.
    wildcard = UrlGuard(allowed_hosts=(), listen_hosts=("0.0.0.0",))
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(socket.gethostname(), None)
    except socket.gaierror:
        infos = []
    for address in {str(info[4][0]) for info in infos if "%" not in str(info[4][0])}:
        with pytest.raises(UrlRefused):
            await wildcard.check(f"http://[{address}]/hook" if ":" in address else f"http://{address}/hook")


def test_backoff_doubles_with_jitter_up_to_the_ceiling() -> None:
    policy = RetryPolicy(base=5.0, ceiling=3600.0, max_attempts=15)
    assert [policy.delay(n, 0.0) for n in (1, 2, 3, 4)] == [2.5, 5.0, 10.0, 20.0]  # half, at jitter 0
    assert [round(policy.delay(n, 0.999999), 3) for n in (1, 2, 3)] == [
        5.0,
        10.0,
        20.0,
    ]  # up to the full step
    assert policy.delay(30, 0.999999) == pytest.approx(3600.0) and policy.delay(10_000, 0.5) == 2700.0
    assert policy.delay(1, 0.0, retry_after=60) == 60.0  # a target's Retry-After is honoured
    assert policy.delay(1, 0.0, retry_after=86_400) == 3600.0  # up to the ceiling
    assert not policy.exhausted(14) and policy.exhausted(15)
    assert not RetryPolicy(1.0, 10.0).exhausted(10**6)  # 0: no cap


# -- deliveries ---------------------------------------------------------------------------------------


async def test_an_action_reaches_the_callback_url_and_the_webhook_signed(
    server: Server, admin: Admin, http: httpx.AsyncClient, targets: Any
) -> None:
    auth = await user(admin, "alice")
    await owned_topic(http, auth)
    callback, hook_target, read_target = await targets(), await targets(), await targets()
    hook = await create_webhook(http, auth, url=hook_target.url(), events=["action"])
    read_only = await create_webhook(http, auth, url=read_target.url(), events=["read"])
    pushed = await push(http, auth, callback_url=callback.url("/deploy-webhook"))

    response = await http.post(
        "/api/action",
        json={"message_id": pushed["id"], "action_id": "approve", "reply_text": None},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    event = response.json()["action"]
    assert await deliveries(http, auth, read_only["id"]) == []  # not subscribed to actions: no row at all

    called = await callback.next()
    callback_secret = (await http.get("/api/webhooks/callback-secret", headers=auth)).json()[
        "callback_secret"
    ]
    assert callback_secret.startswith("cbsec_")
    assert called.path == "/deploy-webhook" and called.verifies(callback_secret)
    assert not called.verifies(hook["secret"])
    assert called.json() == {
        "event": "action",
        "message_id": pushed["id"],
        "topic": "ops",
        "action_id": "approve",
        "action_label": "Approve",
        "reply_text": None,
        "device_name": None,
        "acted_at": event["acted_at"],
    }
    assert called.headers["x-pushgate-event"] == "action"
    assert called.headers["content-type"] == "application/json"

    hooked = await hook_target.next()
    assert hooked.path == "/hooks/pushgate" and hooked.verifies(hook["secret"])
    assert hooked.headers["x-pushgate-event"] == "action"
    assert hooked.body == called.body  # the same event, byte for byte
    first_id = hooked.headers["x-pushgate-delivery"]
    assert uuid.UUID(first_id) and first_id != called.headers["x-pushgate-delivery"]

    await http.post("/api/action", json={"message_id": pushed["id"], "action_id": "reject"}, headers=auth)
    second = await hook_target.next()
    assert second.json()["action_id"] == "reject" and second.verifies(hook["secret"])
    assert second.headers["x-pushgate-delivery"] not in (first_id, called.headers["x-pushgate-delivery"])
    assert (await callback.next()).json()["action_id"] == "reject"

    log = await until(
        lambda: _all_sent(http, auth, hook["id"], 2), "the webhook's two deliveries to be recorded as sent"
    )
    assert [d["id"] for d in log] == [second.headers["x-pushgate-delivery"], first_id]  # newest first
    assert [(d["event"], d["attempts"], d["message_id"]) for d in log] == [("action", 1, pushed["id"])] * 2

    # Another user's callback secret differs: one user cannot sign for another.
    other = (await http.get("/api/webhooks/callback-secret", headers=await user(admin, "bob"))).json()
    assert other["callback_secret"] != callback_secret


async def _all_sent(http: httpx.AsyncClient, auth: dict[str, str], hook_id: str, count: int) -> Any:
    log = await deliveries(http, auth, hook_id)
    return log if len(log) == count and all(d["state"] == "sent" for d in log) else None


async def test_delivered_and_read_events_follow_the_receipt(
    server: Server, admin: Admin, http: httpx.AsyncClient, targets: Any, make_client: Any
) -> None:
    auth = await user(admin, "alice")
    ops = await owned_topic(http, auth)
    await owned_topic(http, auth, "other")
    target = await targets()
    hook = await create_webhook(http, auth, url=target.url(), events=["delivered", "read"], topic_ids=[ops])
    hub: MqttClient = await make_client(username="hub", password=auth["Authorization"][7:])
    assert await hub.subscribe("pushgate/+/message") == 1

    await push(http, auth, "other")  # not in the webhook's topic_ids
    pushed = await push(http, auth)
    assert {(await hub.receive()).topic for _ in range(2)} == {
        "pushgate/other/message",
        "pushgate/ops/message",
    }

    delivered = await target.next()
    assert delivered.verifies(hook["secret"]) and delivered.headers["x-pushgate-event"] == "delivered"
    body = delivered.json()
    assert (body["event"], body["message_id"], body["topic"]) == ("delivered", pushed["id"], "ops")
    assert body["receipt"]["status"] == "delivered" and body["receipt"]["delivered_count"] == 1
    assert body["receipt"]["receipt_id"] == pushed["receipt_id"]
    # The message on "other" was delivered first, in an earlier transaction: it added no row.
    assert [d["message_id"] for d in await deliveries(http, auth, hook["id"])] == [pushed["id"]]

    assert (await http.post("/api/read", json={"message_id": pushed["id"]}, headers=auth)).status_code == 200
    read = await target.next()
    assert read.verifies(hook["secret"]) and read.headers["x-pushgate-event"] == "read"
    assert read.json()["receipt"]["status"] == "read" and read.json()["receipt"]["read_count"] == 1


async def test_expired_events_and_a_url_refused_at_delivery_time(config: Config, targets: Any) -> None:
    """The SSRF check runs again at delivery: a webhook allowed when created is refused once the operator
    takes the host off allowed_hosts (DNS changing under a name has the same effect)."""
    target = await targets()
    async with Gateway.running(config) as gw:
        gw.start_delivery()
        owner = await gw.admin.create_user("alice")
        who = await gw.access.authenticate(owner.secret)
        topic = await gw.admin.create_topic("ops", owner_id=who.user_id)
        hook = await gw.webhooks.create(who, {"url": target.url(), "events": ["expired", "action"]})
        result = await gw.publish(PushRequest(topic="ops", message="m", ttl=60, source="test"), who)
        assert await gw.actions.expire_due(now=result.timestamp + timedelta(seconds=61)) == 1
        expired = await target.next()
        assert expired.verifies(hook.secret) and expired.headers["x-pushgate-event"] == "expired"
        body = expired.json()
        assert sorted(body) == ["event", "message_id", "receipt", "topic"]
        assert (body["event"], body["message_id"], body["topic"]) == ("expired", result.id, "ops")
        receipt = body["receipt"]
        assert (receipt["receipt_id"], receipt["topic_id"], receipt["status"]) == (
            result.receipt_id,
            topic.id,
            "expired",
        )

    closed = dataclasses.replace(config, webhooks=dataclasses.replace(config.webhooks, allowed_hosts=()))
    async with Gateway.running(closed) as gw:
        gw.start_delivery()
        acted = await gw.publish(PushRequest(topic="ops", message="m", actions=ACTIONS, source="test"), who)
        await gw.actions.report(who, ActionReport(acted.id, "approve"))

        async def failed() -> Any:
            log = (await gw.webhooks.deliveries(who, hook.webhook["id"], {}))["deliveries"]
            return log[0] if log and log[0]["event"] == "action" and log[0]["state"] == "failed" else None

        entry = await until(failed, "the action delivery to be refused")
        assert "loopback" in entry["last_error"] and entry["attempts"] == 1
    assert target.requests.empty()


async def test_retries_with_backoff_until_sent_or_dead(
    server: Server, admin: Admin, http: httpx.AsyncClient, targets: Any
) -> None:
    auth = await user(admin, "alice")
    await owned_topic(http, auth)
    flaky = await targets([500, 500], default=200)
    broken = await targets(default=500)
    gone = await targets(default=404)
    hooks = {}
    for name, target in (("flaky", flaky), ("broken", broken), ("gone", gone)):
        hooks[name] = await create_webhook(http, auth, url=target.url(), events=["action"])
    pushed = await push(http, auth)
    await http.post("/api/action", json={"message_id": pushed["id"], "action_id": "approve"}, headers=auth)

    tries = [await flaky.next() for _ in range(3)]
    assert len({t.headers["x-pushgate-delivery"] for t in tries}) == 1  # one delivery, three attempts
    assert len({t.body for t in tries}) == 1 and all(t.verifies(hooks["flaky"]["secret"]) for t in tries)
    # Exponential backoff with jitter between half and all of each step: 0.05 s, then 0.1 s.
    gaps = [later.at - earlier.at for earlier, later in zip(tries, tries[1:], strict=False)]
    assert gaps[0] >= BACKOFF_BASE / 2 and gaps[1] >= BACKOFF_BASE, gaps

    broken_tries = [await broken.next() for _ in range(3)]  # max_attempts = 3
    assert (await gone.next()).json()["action_id"] == "approve"  # once: a 404 is not retried

    async def settled(name: str, state: str) -> Any:
        log = await deliveries(http, auth, hooks[name]["id"])
        return log[0] if log and log[0]["state"] == state else None

    sent = await until(lambda: settled("flaky", "sent"), "the flaky target's delivery to be sent")
    assert (sent["attempts"], sent["event"], sent["id"]) == (
        3,
        "action",
        tries[0].headers["x-pushgate-delivery"],
    )
    dead = await until(lambda: settled("broken", "dead"), "the broken target's delivery to be dead")
    assert (dead["attempts"], dead["last_error"], dead["next_attempt_at"]) == (3, "HTTP 500", None)
    assert dead["id"] == broken_tries[0].headers["x-pushgate-delivery"]
    failed = await until(lambda: settled("gone", "failed"), "the 404 target's delivery to fail")
    assert failed["attempts"] == 1 and failed["last_error"].startswith("HTTP 404")
    assert broken.requests.empty() and gone.requests.empty()  # nothing after dead or a permanent failure
    states = await deliveries_by_state(http, auth, hooks["broken"]["id"], "dead")
    assert [d["id"] for d in states] == [dead["id"]]


async def deliveries_by_state(http: httpx.AsyncClient, auth: dict[str, str], hook_id: str, state: str) -> Any:
    response = await http.get(f"/api/webhooks/{hook_id}/deliveries?state={state}&limit=5", headers=auth)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


async def test_a_delivery_pending_at_shutdown_is_sent_after_the_restart(config: Config, admin: Admin) -> None:
    # The target's port is bound but not listening: connections are refused, as by a hub that is down.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    target = Target()
    target.port = sock.getsockname()[1]
    # One second before the second attempt: it falls due after the restart, so the restarted outbox must
    # find it in the table and wait for it.
    config = dataclasses.replace(
        config, webhooks=dataclasses.replace(config.webhooks, backoff_base=1.0, backoff_max=1.0)
    )
    auth = await user(admin, "alice")
    async with serving(config) as http:
        await owned_topic(http, auth)
        hook = await create_webhook(http, auth, url=target.url(), events=["action"])
        pushed = await push(http, auth)
        await http.post(
            "/api/action", json={"message_id": pushed["id"], "action_id": "approve"}, headers=auth
        )

        async def refused() -> Any:
            log = await deliveries(http, auth, hook["id"])
            return log[0] if log and log[0]["attempts"] >= 1 else None

        pending = await until(refused, "a refused attempt to be recorded")
        assert pending["state"] == "pending" and "ConnectError" in pending["last_error"]
        assert pending["attempts"] == 1

    try:
        await target.start(sock)  # the hub is back while the gateway is down
        async with serving(config) as http:
            received = await target.next()
            assert received.verifies(hook["secret"]) and received.json()["action_id"] == "approve"
            assert received.headers["x-pushgate-delivery"] == pending["id"]

            async def sent() -> Any:
                log = await deliveries(http, auth, hook["id"])
                return log[0] if log[0]["state"] == "sent" else None

            assert (await until(sent, "the delivery to be recorded as sent"))["last_error"] is None
    finally:
        await target.close()


async def test_the_test_event_is_signed_and_reports_the_answer(
    server: Server, admin: Admin, http: httpx.AsyncClient, targets: Any
) -> None:
    auth = await user(admin, "alice")
    target = await targets([200, 503])
    hook = await create_webhook(http, auth, url=target.url(), events=["action"], active=False)

    response = await http.post(f"/api/webhooks/{hook['id']}/test", headers=auth)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == {
        "success": True,
        "delivery_id": answer["delivery_id"],
        "status_code": 200,
        "error": None,
    }
    received = await target.next()
    assert received.verifies(hook["secret"]) and received.headers["x-pushgate-event"] == "test"
    assert received.headers["x-pushgate-delivery"] == answer["delivery_id"]
    assert received.json()["event"] == "test" and received.json()["webhook_id"] == hook["id"]

    answer = (await http.post(f"/api/webhooks/{hook['id']}/test/", headers=auth)).json()
    assert (answer["success"], answer["status_code"], answer["error"]) == (False, 503, "HTTP 503")
    assert (await target.next()).headers["x-pushgate-delivery"] != received.headers["x-pushgate-delivery"]
    assert await deliveries(http, auth, hook["id"]) == []  # a test is not an outbox delivery


async def test_callback_secrets_derive_from_a_root_kept_in_the_data_dir(config: Config) -> None:
    root_file = Path(config.storage.data_dir) / "callback_secret"
    async with Gateway.running(config) as gw:
        root = root_file.read_text().strip()
        assert root_file.stat().st_mode & 0o777 == 0o600 and len(root) >= 40
        assert gw.webhooks.callback_secret(None) == root  # a topic without owner: the operator's root
        alice = gw.webhooks.callback_secret("alice-id")
        assert alice == "cbsec_" + hmac.new(root.encode(), b"callback:alice-id", hashlib.sha256).hexdigest()
        with pytest.raises(Unauthorized):
            await gw.webhooks.user_callback_secret(Principal("anonymous"))
    async with Gateway.running(config) as gw:  # the same after a restart
        assert gw.webhooks.callback_secret("alice-id") == alice
    configured = dataclasses.replace(config, webhooks=WebhooksConfig(callback_secret="from-the-config"))
    async with Gateway.running(configured) as gw:
        assert gw.webhooks.callback_secret(None) == "from-the-config"
