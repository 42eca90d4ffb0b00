"""The devices API over real HTTP: ``POST/GET /api/devices`` and ``DELETE /api/devices/<id>``.

Expo tokens come from ``ExponentPushToken[...]``; the Web Push keys are the user agent's public key and
auth secret of RFC 8291's worked example, and the P-256 base point, so they are real keys on the curve.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from gateway.admin import Admin
from gateway.config import Config
from gateway.devices import parse_registration
from gateway.errors import ValidationError
from gateway.storage import database
from gateway.storage.models import Device
from tests.conftest import Server, assert_error, bearer, user

IPHONE = "ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx]"
PIXEL = "ExpoPushToken[yyyyyyyyyyyyyyyyyyyy1234]"
RFC8291_P256DH = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
RFC8291_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
BASE_POINT = "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"
FCM = "https://fcm.googleapis.com/fcm/send/dXkq3bPnSxE:APA91bGw0-5kQ2mD"
SHAPE = {
    "id",
    "platform",
    "token_hint",
    "device_name",
    "app_version",
    "external_id",
    "tags",
    "topics",
    "status",
    "created_at",
    "last_seen_at",
}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def subscription(
    endpoint: str = FCM, p256dh: str = RFC8291_P256DH, auth: str = RFC8291_AUTH
) -> dict[str, Any]:
    """What ``JSON.stringify(pushSubscription)`` gives in a browser."""
    return {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": p256dh, "auth": auth}}


async def register(
    http: httpx.AsyncClient, headers: dict[str, str], status: int = 201, **body: Any
) -> dict[str, Any]:
    response = await http.post("/api/devices", json=body, headers=headers)
    assert response.status_code == status, response.text
    return response.json()  # type: ignore[no-any-return]


async def listed(http: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await http.get("/api/devices", headers=headers)
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["devices"]
    return response.json()["devices"]  # type: ignore[no-any-return]


async def stored(config: Config) -> list[Device]:
    """The devices table through a fresh engine, as a person inspecting the database would see it."""
    engine = database.create_engine(config.storage)
    try:
        async with database.session_factory(engine)() as session:
            return list(await session.scalars(select(Device).order_by(Device.id)))
    finally:
        await engine.dispose()


async def set_status(config: Config, device_id: str, status: str) -> None:
    """Mark a device as a delivery channel will (expired, bounced), through a fresh engine."""
    engine = database.create_engine(config.storage)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(Device).where(Device.id == device_id).values(status=status))
    finally:
        await engine.dispose()


async def test_register_expo_devices(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    iphone = await register(
        http, alice, platform="ios", push_token=IPHONE, device_name="Vincent's iPhone", app_version="1.1.1"
    )
    assert set(iphone) == SHAPE
    assert iphone["platform"] == "ios"
    assert (iphone["device_name"], iphone["app_version"], iphone["status"]) == (
        "Vincent's iPhone",
        "1.1.1",
        "active",
    )
    assert (iphone["external_id"], iphone["tags"], iphone["topics"]) == (None, [], [])
    assert iphone["created_at"].endswith("Z") and iphone["last_seen_at"] == iphone["created_at"]
    assert iphone["token_hint"] == "ExponentPushToken[...xxxx]"

    pixel = await register(
        http, alice, platform="android", push_token=PIXEL, external_id="user-42", tags=["beta", "kitchen"]
    )
    assert (pixel["platform"], pixel["device_name"], pixel["app_version"]) == ("android", "", "")
    assert (pixel["external_id"], pixel["tags"]) == ("user-42", ["beta", "kitchen"])
    assert pixel["token_hint"] == "ExpoPushToken[...1234]"

    devices = await listed(http, alice)
    assert devices == [pixel, iphone]
    assert IPHONE not in str(devices) and PIXEL not in str(devices)
    rows = await stored(server.config)
    assert [(d.platform, d.push_token, d.webpush_endpoint) for d in rows] == [
        ("ios", IPHONE, None),
        ("android", PIXEL, None),
    ]


async def test_register_a_browser(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    padded = subscription(p256dh=RFC8291_P256DH + "=", auth=RFC8291_AUTH + "==")
    browser = await register(http, alice, platform="web", subscription=padded, device_name="Firefox")
    assert set(browser) == SHAPE
    assert browser["platform"] == "web" and browser["device_name"] == "Firefox"
    assert browser["token_hint"] == "https://fcm.googleapis.com/...Q2mD"

    text = (await http.get("/api/devices", headers=alice)).text
    for secret in (FCM, RFC8291_AUTH, RFC8291_P256DH):
        assert secret not in text
    [row] = await stored(server.config)
    assert (row.webpush_endpoint, row.push_token) == (FCM, None)
    # Stored as browsers send them: base64url without padding.
    assert (row.webpush_p256dh, row.webpush_auth) == (RFC8291_P256DH, RFC8291_AUTH)


async def test_registering_again_updates_the_device(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    await admin.create_topic("door", owner="alice")
    first = await register(
        http,
        alice,
        platform="ios",
        push_token=IPHONE,
        device_name="iPhone",
        app_version="1.0.0",
        tags=["beta"],
        topics=["door"],
        external_id="u1",
    )
    [before] = await stored(server.config)
    await set_status(server.config, first["id"], "expired")
    assert [d["status"] for d in await listed(http, alice)] == ["expired"]

    # The app starts again: the same token with a new version, nothing else.
    again = await register(http, alice, 200, platform="ios", push_token=IPHONE, app_version="1.1.0")
    assert again["id"] == first["id"]
    assert again == {
        **first,
        "app_version": "1.1.0",
        "status": "active",
        "last_seen_at": again["last_seen_at"],
    }
    [after] = await stored(server.config)
    assert after.last_seen_at > before.last_seen_at and after.created_at == before.created_at

    # Fields given replace, and null clears.
    cleared = await register(
        http,
        alice,
        200,
        platform="ios",
        push_token=IPHONE,
        tags=[],
        topics=None,
        external_id=None,
        device_name=None,
    )
    assert (cleared["tags"], cleared["topics"], cleared["external_id"], cleared["device_name"]) == (
        [],
        [],
        None,
        "",
    )
    assert [d["id"] for d in await listed(http, alice)] == [first["id"]]


async def test_a_browser_registering_again_replaces_its_keys(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    first = await register(http, alice, platform="web", subscription=subscription())
    again = await register(http, alice, 200, platform="web", subscription=subscription(p256dh=BASE_POINT))
    assert again["id"] == first["id"]
    [row] = await stored(server.config)
    assert row.webpush_p256dh == BASE_POINT
    other = await register(http, alice, platform="web", subscription=subscription(endpoint=FCM + "x"))
    assert other["id"] != first["id"]
    assert len(await stored(server.config)) == 2


async def test_concurrent_registrations_of_one_token_make_one_device(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    answers = await asyncio.gather(
        *(
            http.post("/api/devices", json={"platform": "ios", "push_token": IPHONE}, headers=alice)
            for _ in range(6)
        )
    )
    assert sorted(r.status_code for r in answers) == [200] * 5 + [201], [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert len(await stored(server.config)) == 1


async def test_listed_most_recently_seen_first(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    a = await register(http, alice, platform="ios", push_token="ExponentPushToken[aaaaaaaaaaaa]")
    b = await register(http, alice, platform="android", push_token="ExponentPushToken[bbbbbbbbbbbb]")
    c = await register(http, alice, platform="web", subscription=subscription())
    assert [d["id"] for d in await listed(http, alice)] == [c["id"], b["id"], a["id"]]

    await register(http, alice, 200, platform="ios", push_token="ExponentPushToken[aaaaaaaaaaaa]")
    assert [d["id"] for d in await listed(http, alice)] == [a["id"], c["id"], b["id"]]


async def test_users_see_only_their_own_devices(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    bob = await user(admin, "bob")
    mine = await register(http, alice, platform="ios", push_token=IPHONE, device_name="Alice's")
    assert await listed(http, bob) == []

    # The same token under another user is that user's own device; alice's stays as it was.
    bobs = await register(http, bob, platform="ios", push_token=IPHONE, device_name="Bob's")
    assert bobs["id"] != mine["id"]
    assert await listed(http, alice) == [mine]
    assert [d["id"] for d in await listed(http, bob)] == [bobs["id"]]

    unknown = "0190a000-0000-7000-8000-000000000000"
    seen = []
    for device_id in (mine["id"], unknown):
        response = await http.delete(f"/api/devices/{device_id}", headers=bob)
        assert_error(response, 404)
        assert response.json()["error"] == "Device not found"
        seen.append(response.text.replace(device_id, "<id>"))
    assert seen[0] == seen[1]  # another user's device answers exactly as an unknown id
    assert await listed(http, alice) == [mine]


async def test_delete(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    doomed = await register(http, alice, platform="ios", push_token=IPHONE)
    kept = await register(http, alice, platform="web", subscription=subscription())

    response = await http.delete(f"/api/devices/{doomed['id']}", headers=alice)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": doomed["id"], "deleted": True}
    assert await listed(http, alice) == [kept]
    assert_error(await http.delete(f"/api/devices/{doomed['id']}", headers=alice), 404)

    response = await http.delete(f"/api/devices/{kept['id']}/", headers=alice, follow_redirects=False)
    assert response.status_code == 200, response.text
    assert await listed(http, alice) == [] and await stored(server.config) == []
    # Registering the token again makes a new device.
    again = await register(http, alice, platform="ios", push_token=IPHONE)
    assert again["id"] != doomed["id"]


async def test_topics_are_checked_against_access(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    await admin.create_user("bob")
    await admin.create_topic("alice-private", private=True, owner="alice")
    await admin.create_topic("bob-public", owner="bob")
    await admin.create_topic("bob-private", private=True, owner="bob")

    device = await register(
        http,
        alice,
        platform="ios",
        push_token=IPHONE,
        topics=["alice-private", "bob-public", "alice-private"],
    )
    assert device["topics"] == ["alice-private", "bob-public"]  # duplicates dropped, order kept

    messages = []
    for topic in ("bob-private", "no-such-topic"):
        body = {"platform": "ios", "push_token": IPHONE, "topics": ["alice-private", topic]}
        response = await http.post("/api/devices", json=body, headers=alice)
        assert_error(response, 400, "topics")
        messages.append(response.json()["message"].replace(topic, "<name>"))
    assert messages[0] == messages[1]  # a private topic of another user reads as a missing one
    assert (await listed(http, alice))[0]["topics"] == ["alice-private", "bob-public"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/devices"), ("POST", "/api/devices"), ("DELETE", "/api/devices/{id}")],
)
async def test_every_endpoint_needs_a_user_token(
    server: Server, admin: Admin, http: httpx.AsyncClient, method: str, path: str
) -> None:
    alice = await user(admin, "alice")
    device = await register(http, alice, platform="ios", push_token=IPHONE)
    await admin.create_topic("t")
    key = await admin.create_key("t")
    body = {"platform": "android", "push_token": PIXEL}
    for headers in ({}, bearer(key.secret), bearer("pt_000000000000_not-a-real-token")):
        response = await http.request(method, path.format(id=device["id"]), json=body, headers=headers)
        assert "token" in assert_error(response, 401)["message"]
    assert [d.id for d in await stored(server.config)] == [device["id"]]


GOOD_SUB = subscription()


def sub_with(**changes: Any) -> dict[str, Any]:
    keys = {**GOOD_SUB["keys"], **changes.pop("keys", {})}
    return {**GOOD_SUB, "keys": keys, **changes}


def web(**changes: Any) -> dict[str, Any]:
    """A browser's registration with some of its subscription's members changed."""
    return {"platform": "web", "subscription": sub_with(**changes)}


def ios(**extra: Any) -> dict[str, Any]:
    return {"platform": "ios", "push_token": IPHONE, **extra}


POINT = base64.urlsafe_b64decode(BASE_POINT + "==")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "platform"),
        ({"platform": "windows", "push_token": IPHONE}, "platform"),
        ({"platform": "IOS", "push_token": IPHONE}, "platform"),
        ({"platform": None, "push_token": IPHONE}, "platform"),
        ({"platform": "ios"}, "push_token"),
        ({"platform": "android", "push_token": 42}, "push_token"),
        ({"platform": "ios", "push_token": "abc123"}, "push_token"),
        ({"platform": "ios", "push_token": "ExponentPushToken[]"}, "push_token"),
        ({"platform": "ios", "push_token": "ExponentPushToken[a b]"}, "push_token"),
        ({"platform": "ios", "push_token": f"ExponentPushToken[{'x' * 300}]"}, "push_token"),
        (ios(subscription=GOOD_SUB), "subscription"),
        ({"platform": "web"}, "subscription"),
        ({"platform": "web", "subscription": FCM}, "subscription"),
        ({"platform": "web", "subscription": GOOD_SUB, "push_token": IPHONE}, "push_token"),
        (web(endpoint=None), "subscription.endpoint"),
        (web(endpoint="http://push.example/x"), "subscription.endpoint"),
        (web(endpoint="https://"), "subscription.endpoint"),
        (web(endpoint="https://a:b@push.example/x"), "subscription.endpoint"),
        (web(endpoint="https://push.example:99999/x"), "subscription.endpoint"),
        (web(endpoint="https://push.example/" + "x" * 2048), "subscription.endpoint"),
        ({"platform": "web", "subscription": {"endpoint": FCM}}, "subscription.keys"),
        (web(keys={"p256dh": None}), "subscription.keys.p256dh"),
        (web(keys={"p256dh": "a+b/c=="}), "subscription.keys.p256dh"),
        (web(keys={"p256dh": b64(POINT[:64])}), "subscription.keys.p256dh"),
        (web(keys={"p256dh": b64(b"\x02" + POINT[1:])}), "subscription.keys.p256dh"),
        (web(keys={"p256dh": b64(POINT[:-1] + b"\x00")}), "subscription.keys.p256dh"),
        (web(keys={"auth": b64(bytes(15))}), "subscription.keys.auth"),
        (web(keys={"auth": b64(bytes(17))}), "subscription.keys.auth"),
        (web(keys={"auth": 16}), "subscription.keys.auth"),
        (ios(device_name="d" * 101), "device_name"),
        (ios(device_name=5), "device_name"),
        (ios(app_version="v" * 65), "app_version"),
        (ios(external_id="e" * 256), "external_id"),
        (ios(external_id=7), "external_id"),
        (ios(tags="beta,kitchen"), "tags"),
        (ios(tags=[1]), "tags"),
        (ios(tags=[" "]), "tags"),
        (ios(tags=[f"t{i}" for i in range(21)]), "tags"),
        (ios(tags=["t" * 65]), "tags"),
        (ios(topics="door"), "topics"),
        (ios(topics=["bad name!"]), "topics"),
        (ios(topics=["missing"]), "topics"),
        (ios(topics=[f"t{i}" for i in range(101)]), "topics"),
        (ios(status="active"), "status"),
        (ios(pushToken=IPHONE), "pushToken"),
        ([ios()], "body"),
    ],
)
async def test_invalid_fields_are_400_naming_the_field(
    server: Server, admin: Admin, http: httpx.AsyncClient, body: object, field: str
) -> None:
    alice = await user(admin, "alice")
    assert_error(await http.post("/api/devices", json=body, headers=alice), 400, field)
    assert await stored(server.config) == []


async def test_read_only_fields_of_an_answer_are_ignored(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    device = await register(http, alice, platform="ios", push_token=IPHONE)
    echoed = {k: v for k, v in device.items() if k != "status"}
    again = await register(http, alice, 200, push_token=IPHONE, **echoed)
    assert again["id"] == device["id"]


async def test_malformed_json_is_400(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    response = await http.post(
        "/api/devices",
        content=b'{"platform": "ios", "push_token": ',
        headers={**alice, "Content-Type": "application/json"},
    )
    assert assert_error(response, 400, "body")["error"] == "Malformed JSON"
    # An empty body is an empty object: the first missing field is named.
    assert_error(await http.post("/api/devices", headers=alice), 400, "platform")


async def test_every_path_answers_with_and_without_a_trailing_slash(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    body = {"platform": "ios", "push_token": IPHONE}
    response = await http.post("/api/devices/", json=body, headers=alice, follow_redirects=False)
    assert response.status_code == 201, response.text
    response = await http.post("/api/devices/", json=body, headers=alice, follow_redirects=False)
    assert response.status_code == 200, response.text
    response = await http.get("/api/devices/", headers=alice, follow_redirects=False)
    assert response.status_code == 200 and len(response.json()["devices"]) == 1


def test_registration_parses_without_io() -> None:
    """The cheapest level: the field rules alone."""
    parsed = parse_registration(
        {"platform": "web", "subscription": subscription(p256dh=BASE_POINT + "="), "tags": [" a ", "a"]}
    )
    assert parsed.push_token is None and parsed.subscription is not None
    assert parsed.subscription.p256dh == BASE_POINT
    assert parsed.given == {"tags": ["a"]}
    # Members a browser may add to its PushSubscription are ignored; fields of the request are not.
    parse_registration({"platform": "web", "subscription": {**GOOD_SUB, "future": 1}})
    with pytest.raises(ValidationError) as caught:
        parse_registration({"platform": "ios", "push_token": IPHONE, "future": 1})
    assert caught.value.field == "future"
