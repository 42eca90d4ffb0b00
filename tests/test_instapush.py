"""Instapush's REST API (issue 6): every curl example of ``api-docs/instapush.txt`` with only the base URL
and the credentials changed gets the documented answer, posts reach an MQTT hub, and each error answers
Instapush's ``{"msg", "error": true, "status"}`` with the matching HTTP status."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest

from gateway.admin import Admin
from gateway.config import Config, RateLimitConfig
from gateway.instapush import render
from http_bridge.instapush import complete_json
from tests.conftest import MqttClient, Server, bearer, stored_messages
from tests.test_http_push import curl

WRONG_APP = {"msg": "Wrong APPID or APPSECRET", "error": True, "status": 401}
BAD_TOKEN = {"msg": "Invalid User Token", "error": True, "status": 401}
# The documented bodies, as printed (the first lacks its final "}").
DOC_EVENT = '{"title":"MYAPI","trackers":["email","country"],"message":"{email} has signed up from {country}"'
DOC_POST = '{"event":"signups","trackers":{"email":"myemail "}}'


def failed(response: httpx.Response, status: int) -> str:
    """An Instapush error: exactly msg, error and status, the HTTP status the same; returns msg."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"msg", "error", "status"} and body["error"] is True and body["status"] == status, (
        body
    )
    assert body["msg"]
    return str(body["msg"])


async def app(http: httpx.AsyncClient, token: str, title: str = "test") -> dict[str, str]:
    """An app made through apps/add: its appid and appsecret headers."""
    response = await http.post("/v1/apps/add", json={"title": title}, headers={"x-instapush-token": token})
    assert response.status_code == 201, response.text
    return {"x-instapush-appid": response.json()["id"], "x-instapush-appsecret": response.json()["secret"]}


async def test_documented_curl_examples(server: Server, admin: Admin, make_client: Any) -> None:
    token = (await admin.create_user("alice")).secret
    base = server.http_url

    # Apps: Add App
    status, _, body = await curl(
        "-X", "POST", "-H", f"x-instapush-token: {token}", "-H", "Content-Type: application/json",
        "-d", '{"title":"test"}', f"{base}/v1/apps/add",
    )  # fmt: skip
    assert status == 201, body
    created = json.loads(body)
    assert created == {
        "msg": "App Created Successfully",
        "id": created["id"],
        "secret": created["secret"],
        "error": False,
        "status": 201,
    }
    app_id, secret = created["id"], created["secret"]
    assert secret.startswith("pk_")

    # Apps: List. The secret is stored hashed: it is shown masked to its public part.
    status, _, body = await curl("-X", "GET", "-H", f"x-instapush-token: {token}", f"{base}/v1/apps/list")
    assert status == 200, body
    assert json.loads(body) == [{"title": "test", "appID": app_id, "appSecret": secret[:16] + "********"}]

    # Events: Add Event, its body as printed (it lacks its final "}").
    status, _, body = await curl(
        "-X", "POST", "-H", f"x-instapush-appid: {app_id}", "-H", f"x-instapush-appsecret: {secret}",
        "-H", "Content-Type: application/json",
        "-d", DOC_EVENT,
        f"{base}/v1/events/add",
    )  # fmt: skip
    assert status == 201, body
    assert json.loads(body) == {"msg": "Event Created Succesfully", "error": False, "status": 201}

    # Events: List
    status, _, body = await curl(
        "-X", "GET", "-H", f"x-instapush-appid: {app_id}", "-H", f"x-instapush-appsecret: {secret}",
        f"{base}/v1/events/list",
    )  # fmt: skip
    assert status == 200, body
    assert json.loads(body) == [{"title": "MYAPI", "trackers": ["email", "country"]}]

    # The "signups" event the Authentication and Send notification examples post to.
    async with httpx.AsyncClient(base_url=base) as http:
        headers = {"x-instapush-appid": app_id, "x-instapush-appsecret": secret}
        added = await http.post(
            "/v1/events/add",
            json={"title": "signups", "trackers": ["email"], "message": "{email} has signed up"},
            headers=headers,
        )
        assert added.status_code == 201, added.text

    hub: MqttClient = await make_client(username="hub", password=token)
    assert await hub.subscribe("pushgate/test/message") == 1
    # Authentication, and Notifications: Send notification (the same command).
    for _ in range(2):
        status, headers, body = await curl(
            "-X", "POST", "-H", f"x-instapush-appid: {app_id}", "-H", f"x-instapush-appsecret: {secret}",
            "-H", "Content-Type: application/json", "-d", DOC_POST,
            f"{base}/v1/post",
        )  # fmt: skip
        assert status == 201, body
        assert json.loads(body) == {"msg": "Notification Sent Succesfully", "error": False, "status": 201}
        assert "x-ratelimit-remaining" in headers
        envelope = json.loads((await hub.receive()).payload)
        assert (envelope["topic"], envelope["title"], envelope["message"]) == (
            "test",
            "signups",
            "myemail  has signed up",
        )

    # "https://api.instapush.im/ for the latest version": the same endpoints without /v1.
    async with httpx.AsyncClient(base_url=base) as http:
        headers = {"x-instapush-appid": app_id, "x-instapush-appsecret": secret}
        response = await http.post(
            "/post", json={"event": "MYAPI", "trackers": {"email": "a@b.c", "country": "NL"}}, headers=headers
        )
        assert response.status_code == 201, response.text
        assert (await http.get("/events/list", headers=headers)).json()[0]["title"] == "MYAPI"
        assert (await http.get("/apps/list", headers={"x-instapush-token": token})).json()[0][
            "appID"
        ] == app_id
    envelope = json.loads((await hub.receive()).payload)
    assert (envelope["title"], envelope["message"]) == ("MYAPI", "a@b.c has signed up from NL")

    stored = await stored_messages(server.config)
    assert [(m.source, m.title) for m in stored] == [("instapush", "signups")] * 2 + [("instapush", "MYAPI")]


async def test_credential_errors(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    token = (await admin.create_user("alice")).secret
    other = (await admin.create_user("bob")).secret
    assert (await http.get("/v1/apps/list", headers={"x-instapush-token": other})).json() == []
    mine = await app(http, token)
    theirs = await app(http, other, "theirs")
    key = mine["x-instapush-appsecret"]

    for headers in [{}, {"x-instapush-token": "nope"}, {"x-instapush-token": "pt_000000000000_" + "x" * 32}]:
        assert (await http.get("/v1/apps/list", headers=headers)).json() == BAD_TOKEN
        assert (await http.get("/v1/apps/list", headers=headers)).status_code == 401
        response = await http.post("/v1/apps/add", content=b"{", headers=headers)  # 401 before the body
        assert (response.status_code, response.json()) == (401, BAD_TOKEN)
    # An app secret is not a user token.
    assert (await http.get("/v1/apps/list", headers={"x-instapush-token": key})).json() == BAD_TOKEN

    wrong = [
        {},
        {"x-instapush-appid": mine["x-instapush-appid"]},
        {**mine, "x-instapush-appsecret": "2364eb29c3774016fd8"},
        {**mine, "x-instapush-appsecret": key[:-1] + ("A" if key[-1] != "A" else "B")},
        {**mine, "x-instapush-appid": theirs["x-instapush-appid"]},  # my secret, their app
        {**mine, "x-instapush-appsecret": token},  # a user token is no app secret
    ]
    for headers in wrong:
        for method, path, body in [
            ("GET", "/v1/events/list", None),
            ("POST", "/v1/events/add", {"title": "e", "trackers": [], "message": "m"}),
            ("POST", "/v1/post", {"event": "e", "trackers": {}}),
        ]:
            response = await http.request(method, path, json=body, headers=headers)
            assert (response.status_code, response.json()) == (401, WRONG_APP), (headers, path)

    # A secret revoked through the topic key API is refused.
    topic_id = mine["x-instapush-appid"]
    keys = (await http.get(f"/api/topics/{topic_id}/keys", headers=bearer(token))).json()["keys"]
    assert (
        await http.delete(f"/api/topics/{topic_id}/keys/{keys[0]['id']}", headers=bearer(token))
    ).status_code == 200
    response = await http.get("/v1/events/list", headers=mine)
    assert (response.status_code, response.json()) == (401, WRONG_APP)
    assert (await http.get("/v1/apps/list", headers={"x-instapush-token": token})).json()[0][
        "appSecret"
    ] == ""


async def test_event_and_post_errors(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    token = (await admin.create_user("alice")).secret
    headers = await app(http, token)
    event = {"title": "signups", "trackers": ["email", "country"], "message": "{email} from {country}"}
    assert (await http.post("/v1/events/add", json=event, headers=headers)).status_code == 201

    for bad, field in [
        ({**event, "title": ""}, "title"),
        ({**event, "title": "x" * 65}, "title"),
        ({k: v for k, v in event.items() if k != "trackers"}, "trackers"),
        ({**event, "trackers": "email"}, "trackers"),
        ({**event, "trackers": ["e mail"]}, "tracker"),
        ({k: v for k, v in event.items() if k != "message"}, "message"),
        ({**event, "message": "{email} from {city}"}, "{city}"),
    ]:
        msg = failed(await http.post("/v1/events/add", json=bad, headers=headers), 400)
        assert field in msg, msg
    failed(await http.post("/v1/events/add", content=b'{"title": "x"]', headers=headers), 400)
    failed(await http.post("/v1/events/add", content=b"[1, 2]", headers=headers), 400)

    post = "/v1/post"
    msg = failed(await http.post(post, json={"event": "signin", "trackers": {}}, headers=headers), 404)
    assert "signin" in msg
    msg = failed(
        await http.post(post, json={"event": "signups", "trackers": {"email": "a"}}, headers=headers), 400
    )
    assert msg == "Missing tracker(s): country"
    failed(await http.post(post, json={"event": "signups", "trackers": ["a"]}, headers=headers), 400)
    failed(await http.post(post, json={"trackers": {}}, headers=headers), 400)
    nested = {"event": "signups", "trackers": {"email": {"a": 1}, "country": "NL"}}
    failed(await http.post(post, json=nested, headers=headers), 400)
    huge = {"event": "signups", "trackers": {"email": "x" * 5000, "country": "NL"}}
    assert "limit" in failed(await http.post(post, json=huge, headers=headers), 413)
    failed(await http.post(post, content=b"\xff\xfe", headers=headers), 400)
    # Routing errors keep pushgate's shape; the method is named.
    assert (await http.get(post, headers=headers)).status_code == 405
    assert await stored_messages(server.config) == []

    # Adding an event again replaces its trackers and pattern.
    again = {"title": "signups", "trackers": ["email"], "message": "{email} joined"}
    assert (await http.post("/v1/events/add", json=again, headers=headers)).status_code == 201
    assert (await http.get("/v1/events/list", headers=headers)).json() == [
        {"title": "signups", "trackers": ["email"]}
    ]
    ok = await http.post(post, json={"event": "signups", "trackers": {"email": 42}}, headers=headers)
    assert ok.status_code == 201, ok.text
    assert [m.message for m in await stored_messages(server.config)] == ["42 joined"]


async def test_rendering_is_substitution_only(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    token = (await admin.create_user("alice")).secret
    headers = await app(http, token)
    pattern = "{email!r} {email:>20} {email.__class__} {{email}} {email} {}"
    event = {"title": "e", "trackers": ["email", "email.__class__"], "message": pattern}
    assert (await http.post("/v1/events/add", json=event, headers=headers)).status_code == 201
    trackers = {"email": "{email.__class__}", "email.__class__": "c"}
    response = await http.post("/v1/post", json={"event": "e", "trackers": trackers}, headers=headers)
    assert response.status_code == 201, response.text
    [stored] = await stored_messages(server.config)
    # Only {name} is replaced, once; a value is never expanded again; format syntax stays text.
    assert stored.message == "{email!r} {email:>20} c {{email.__class__}} {email.__class__} {}"
    assert render("{a}{b}{a}", {"a": "{b}", "b": "x"}) == "{b}x{b}"


async def test_apps_are_topics_of_the_user(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    token = (await admin.create_user("alice")).secret
    first = await app(http, token, "Other app")
    second = await app(http, token, "Other app")  # the name is taken: the topic gets a suffix
    bob = (await admin.create_user("bob")).secret
    await app(http, bob, "Other app")
    topics = (await http.get("/api/topics", headers=bearer(token))).json()["topics"]
    assert {t["id"] for t in topics} == {first["x-instapush-appid"], second["x-instapush-appid"]}
    assert all(t["is_private"] and t["description"] == "Other app" for t in topics)
    assert "Other-app" in {t["name"] for t in topics}
    listed = (await http.get("/v1/apps/list", headers={"x-instapush-token": token})).json()
    assert [a["title"] for a in listed] == ["Other app", "Other app"]
    # A key-shaped title never becomes a key-shaped topic name.
    weird = await app(http, token, "pk_abcdefabcdef_x")
    names = {
        t["id"]: t["name"] for t in (await http.get("/api/topics", headers=bearer(token))).json()["topics"]
    }
    assert names[weird["x-instapush-appid"]] == "app-pk_abcdefabcdef_x"


def test_only_missing_closing_brackets_are_completed() -> None:
    assert complete_json('{"a": [1, {"b": "}"') == '{"a": [1, {"b": "}"}]}'
    assert complete_json('{"a": 1,') == '{"a": 1}'
    assert complete_json('{"a": "open') is None  # ends inside a string
    assert complete_json('{"a": 1]') is None  # a wrong closer
    assert complete_json('{"a": 1}') is None  # nothing missing


@pytest.fixture
def key_burst() -> int | None:
    return None  # the default limits


@pytest.fixture
def config(config: Config, key_burst: int | None) -> Config:
    if key_burst is None:
        return config
    return dataclasses.replace(config, ratelimit=RateLimitConfig(key_burst=key_burst, key_per_second=0.001))


@pytest.mark.parametrize("key_burst", [1])
async def test_over_the_rate_limit(
    server: Server, admin: Admin, http: httpx.AsyncClient, key_burst: int
) -> None:
    headers = await app(http, (await admin.create_user("alice")).secret)
    event = {"title": "e", "trackers": [], "message": "tick"}
    assert (await http.post("/v1/events/add", json=event, headers=headers)).status_code == 201
    assert (
        await http.post("/v1/post", json={"event": "e", "trackers": {}}, headers=headers)
    ).status_code == 201
    refused = await http.post("/v1/post", json={"event": "e", "trackers": {}}, headers=headers)
    assert "retry after" in failed(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert [m.message for m in await stored_messages(server.config)] == ["tick"]
