"""PushStaq's channel API (issue 6): the documented curl examples with only the base URL changed, the key
in a header or in the path, revoked and invalid keys, and automatic revocation of a key that keeps
exceeding its rate limit (``[ratelimit] auto_revoke``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.access import Principal
from gateway.admin import Admin
from gateway.autorevoke import AutoRevoker
from gateway.config import Config, RateLimitConfig, WebhooksConfig
from gateway.core import Gateway
from tests.conftest import TIMEOUT, MqttClient, Server, assert_error, bearer, stored_messages, until
from tests.test_http_push import assert_success, curl
from tests.test_webhooks import Target

DOC_BODY = '{"message":"hello from API!"}'


@dataclasses.dataclass
class Channel:
    auth: dict[str, str]  # the owner's user token
    topic: dict[str, Any]
    key: dict[str, Any]  # as POST /api/topics/<id>/keys answered: id, key, label


async def channel(
    http: httpx.AsyncClient, admin: Admin, name: str = "devops", user: str = "alice"
) -> Channel:
    """A private channel with a key made through the topic key API, as PushStaq's settings pane does."""
    auth = bearer((await admin.create_user(user)).secret)
    topic = await http.post("/api/topics", json={"name": name, "is_private": True}, headers=auth)
    assert topic.status_code == 201, topic.text
    key = await http.post(f"/api/topics/{topic.json()['id']}/keys", json={"label": "ifttt"}, headers=auth)
    assert key.status_code == 201, key.text
    return Channel(auth, topic.json(), key.json())


async def hub(make_client: Callable[..., Awaitable[MqttClient]], chan: Channel) -> MqttClient:
    client = await make_client(username="hub", password=chan.auth["Authorization"][7:])
    assert await client.subscribe(f"pushgate/{chan.topic['name']}/message") == 1
    return client


async def test_documented_curl_examples(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client: Any
) -> None:
    chan = await channel(http, admin)
    listener = await hub(make_client, chan)
    key = chan.key["key"]
    base = server.http_url

    # "curl example using API key headers", and the same with the api-key header the doc also names.
    examples = [
        ["--header", "Content-Type: application/json", "--header", f"x-api-key: {key}"],
        ["--header", "Content-Type: application/json", "--header", f"api-key: {key}"],
    ]
    urls = [f"{base}/api/push/", f"{base}/api/push/"]
    # "curl example using URL path with API key"
    examples.append(["--header", "Content-Type: application/json"])
    urls.append(f"{base}/api/push/{key}/")

    ids = []
    for args, url in zip(examples, urls, strict=True):
        status, headers, body = await curl(*args, "--request", "POST", "--data", DOC_BODY, url)
        assert status == 200, body
        answer = assert_success(body, "devops")
        assert int(headers["x-ratelimit-remaining"]) >= 0
        envelope = json.loads((await listener.receive()).payload)
        assert (envelope["id"], envelope["topic"], envelope["message"]) == (
            answer["id"],
            "devops",
            "hello from API!",
        )
        ids.append(answer["id"])

    stored = await stored_messages(server.config)
    assert [(m.id, m.message, m.source) for m in stored] == [(i, "hello from API!", "pushstaq") for i in ids]


async def test_both_forms_without_trailing_slash_and_beside_topic_pushes(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    chan = await channel(http, admin)
    key = chan.key["key"]
    for url, headers in [("/api/push", {"x-api-key": key}), (f"/api/push/{key}", {})]:
        response = await http.post(url, json={"message": "no slash"}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["topic"] == "devops"
    # The topic form still works beside it, with the key as a credential.
    response = await http.post("/api/push/devops/", json={"message": "topic"}, headers={"x-api-key": key})
    assert response.status_code == 200, response.text


async def test_errors(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    chan = await channel(http, admin)
    key = chan.key["key"]
    body = {"json": {"message": "hello from API!"}}

    assert_error(await http.post("/api/push/", **body), 401)  # no key at all
    assert_error(await http.post("/api/push/", headers={"x-api-key": "nonsense"}, **body), 401)
    wrong = "pk_000000000000_" + "x" * 32
    assert_error(await http.post("/api/push/", headers={"api-key": wrong}, **body), 401)
    # A key-shaped path segment is a key: invalid is 401 with the JSON error, never 404.
    answer = assert_error(await http.post(f"/api/push/{wrong}/", **body), 401)
    assert answer["error"] == "Invalid API key"
    # A user token names no channel.
    assert_error(
        await http.post("/api/push/", headers={"x-api-key": chan.auth["Authorization"][7:]}, **body), 401
    )
    # The message is required; a body that is not JSON is named.
    assert_error(await http.post("/api/push/", headers={"x-api-key": key}, json={}), 400, "message")
    malformed = {"x-api-key": key, "Content-Type": "application/json"}
    assert_error(await http.post("/api/push/", headers=malformed, content=b"{"), 400, "body")
    response = await http.get("/api/push/")
    assert_error(response, 405)
    assert response.headers["Allow"] == "POST"
    # No topic may take a key's shape, so the path rule never hides a topic.
    taken = await http.post("/api/topics", json={"name": "pk_abcdefabcdef_mine"}, headers=chan.auth)
    assert_error(taken, 400, "name")


async def test_a_revoked_key_is_refused_on_both_forms(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    chan = await channel(http, admin)
    key = chan.key["key"]
    response = await http.delete(f"/api/topics/{chan.topic['id']}/keys/{chan.key['id']}", headers=chan.auth)
    assert response.status_code == 200, response.text
    for url, headers in [("/api/push/", {"x-api-key": key}), (f"/api/push/{key}/", {})]:
        answer = assert_error(await http.post(url, json={"message": "x"}, headers=headers), 401)
        assert "revoked" in answer["message"]
    assert await stored_messages(server.config) == []


# -- automatic revocation ----------------------------------------------------------------------------

BURST = 2
STRIKES = 3


@pytest.fixture
def auto_revoke() -> bool | None:
    return None  # the tests above: the default limits


@pytest.fixture
def config(config: Config, auto_revoke: bool | None) -> Config:
    if auto_revoke is None:
        return config
    # Two pushes at once, then practically none (one per 1000 s): every further push is refused.
    limits = RateLimitConfig(
        key_burst=BURST,
        key_per_second=0.001,
        auto_revoke=auto_revoke,
        auto_revoke_strikes=STRIKES,
        auto_revoke_window=600.0,
    )
    hooks = WebhooksConfig(allowed_hosts=("127.0.0.1",), backoff_base=0.05, backoff_max=0.2)
    return dataclasses.replace(config, ratelimit=limits, webhooks=hooks)


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    started = await Target().start()
    yield started
    await started.close()


@pytest.mark.parametrize("auto_revoke", [True])
async def test_a_key_that_keeps_exceeding_is_revoked(
    server: Server,
    admin: Admin,
    http: httpx.AsyncClient,
    make_client: Any,
    target: Target,
    caplog: pytest.LogCaptureFixture,
    auto_revoke: bool,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.autorevoke")
    chan = await channel(http, admin)
    key = chan.key["key"]
    hook = await http.post(
        "/api/webhooks", json={"url": target.url(), "events": ["key_revoked"]}, headers=chan.auth
    )
    assert hook.status_code == 201, hook.text
    listener = await hub(make_client, chan)
    device = await make_client(username="esp32", password=key)
    disconnected = asyncio.Event()
    loop = asyncio.get_running_loop()
    device.client.on_disconnect = lambda *_: loop.call_soon_threadsafe(disconnected.set)
    device.client.reconnect_delay_set(60, 60)

    for _ in range(BURST):
        assert (
            await http.post("/api/push/", json={"message": "ok"}, headers={"x-api-key": key})
        ).status_code == 200
    for _ in range(STRIKES):
        assert_error(await http.post(f"/api/push/{key}/", json={"message": "spam"}), 429)

    async def refused() -> bool:
        response = await http.post("/api/push/", json={"message": "spam"}, headers={"x-api-key": key})
        return response.status_code == 401

    await until(refused, "the key to be revoked")
    answer = assert_error(await http.post(f"/api/push/{key}/", json={"message": "spam"}), 401)
    assert "revoked" in answer["message"]
    keys = await http.get(f"/api/topics/{chan.topic['id']}/keys", headers=chan.auth)
    assert keys.json()["keys"][0]["revoked_at"] is not None

    # The webhook gets the signed key_revoked event; the topic gets a notice; MQTT clients are dropped.
    received = await target.next()
    event = received.json()
    assert received.headers["x-pushgate-event"] == "key_revoked"
    assert received.verifies(hook.json()["secret"])
    assert {k: event[k] for k in ("event", "key_id", "label", "topic", "topic_id", "reason", "strikes")} == {
        "event": "key_revoked",
        "key_id": chan.key["id"],
        "label": "ifttt",
        "topic": "devops",
        "topic_id": chan.topic["id"],
        "reason": "rate_limit",
        "strikes": STRIKES,
    }
    assert event["revoked_at"] == keys.json()["keys"][0]["revoked_at"]
    messages = [json.loads((await listener.receive()).payload) for _ in range(BURST + 1)]
    notice = messages[-1]
    assert (notice["title"], notice["priority"], notice["id"]) == (
        "API key revoked",
        "high",
        event["message_id"],
    )
    assert '"ifttt"' in notice["message"]
    await asyncio.wait_for(disconnected.wait(), TIMEOUT)

    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.autorevoke"]
    assert len(lines) == 1 and chan.key["id"] in lines[0] and "ifttt" in lines[0]
    assert key not in caplog.text


@pytest.mark.parametrize("auto_revoke", [False])
async def test_off_by_default_nothing_is_revoked(
    server: Server, admin: Admin, http: httpx.AsyncClient, auto_revoke: bool
) -> None:
    assert Config().ratelimit.auto_revoke is False
    chan = await channel(http, admin)
    key = chan.key["key"]
    for _ in range(BURST):
        assert (
            await http.post("/api/push/", json={"message": "ok"}, headers={"x-api-key": key})
        ).status_code == 200
    for _ in range(STRIKES * 5):
        assert_error(await http.post("/api/push/", json={"message": "spam"}, headers={"x-api-key": key}), 429)
    keys = await http.get(f"/api/topics/{chan.topic['id']}/keys", headers=chan.auth)
    assert keys.json()["keys"][0]["revoked_at"] is None
    assert [m.message for m in await stored_messages(server.config)] == ["ok"] * BURST


async def test_strikes_count_only_within_the_window(config: Config, admin: Admin) -> None:
    """The window with a clock passed in: strikes spread wider than the window never revoke."""
    await admin.create_topic("door", private=True)
    created = await admin.create_key("door", label="esp32")
    who = Principal("key", topic_id=None, key_id=created.id, label="esp32")
    now = [1000.0]
    async with Gateway.running(config) as gw:
        revoker = AutoRevoker(
            dataclasses.replace(config.ratelimit, auto_revoke_strikes=STRIKES, auto_revoke_window=10.0),
            sessions=gw.sessions,
            admin=gw.admin,
            publish=gw.publish,
            webhooks=gw.webhooks,
            outbox=gw.outbox,
            clock=lambda: now[0],
        )
        for _ in range(STRIKES * 3):
            revoker.strike(who)
            now[0] += 6.0  # two strikes fit in 10 s, never three
        await revoker.idle()
        assert [k.revoked_at for k in await admin.list_keys("door")] == [None]
        assert len(revoker) == 1  # the key's recent strikes only

        now[0] += 60.0
        revoker.strike(Principal("key", key_id="another"))
        assert len(revoker) == 1  # the first key's strikes left the window and were forgotten

        for _ in range(STRIKES):
            revoker.strike(who)
            now[0] += 1.0
        await revoker.idle()
        assert [k.revoked_at is not None for k in await admin.list_keys("door")] == [True]
