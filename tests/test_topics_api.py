"""The topics and keys management API over real HTTP: ``/api/topics`` and ``/api/topics/<id>/keys``.

The topic cache is set to an hour here, so a change is seen by the very next push only if the API
invalidates the running server's cache: nothing can pass by waiting out the cache.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gateway.admin import Admin
from gateway.config import Config, TopicsConfig
from gateway.storage import database
from gateway.storage.models import ApiKey, Delivery, Message, Receipt
from tests.conftest import Server, assert_error, bearer, stored_messages, user


@pytest.fixture
def config(config: Config) -> Config:
    return dataclasses.replace(config, topics=TopicsConfig(cache_seconds=3600.0))


async def create(http: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await http.post("/api/topics", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def push(http: httpx.AsyncClient, topic: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return await http.post(f"/api/push/{topic}", content="Door opened", headers=headers or {})


async def count_rows(config: Config, query: Any) -> int:
    """Count rows through a fresh engine, as a person inspecting the database would."""
    engine = database.create_engine(config.storage)
    try:
        async with database.session_factory(engine)() as session:
            return int(await session.scalar(query) or 0)
    finally:
        await engine.dispose()


async def test_create_list_patch_delete(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    created = await create(
        http, alice, name="server-alerts", description="Production alerts", is_private=True
    )
    assert set(created) == {"id", "name", "description", "is_private", "created_at", "key_count"}
    assert (created["name"], created["description"], created["is_private"], created["key_count"]) == (
        "server-alerts",
        "Production alerts",
        True,
        0,
    )
    assert created["created_at"].endswith("Z")
    minimal = await create(http, alice, name="door")
    assert (minimal["description"], minimal["is_private"]) == ("", False)

    response = await http.get("/api/topics", headers=alice)
    assert response.status_code == 200
    assert response.json() == {"topics": [minimal, created]}  # by name

    response = await http.patch(
        f"/api/topics/{created['id']}", json={"description": "Staging alerts"}, headers=alice
    )
    assert response.status_code == 200, response.text
    assert response.json() == {**created, "description": "Staging alerts"}

    response = await http.delete(f"/api/topics/{created['id']}", headers=alice)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": created["id"],
        "name": "server-alerts",
        "deleted": True,
        "messages_deleted": 0,
    }
    response = await http.get("/api/topics", headers=alice)
    assert response.json() == {"topics": [minimal]}


async def test_the_owner_is_the_calling_user(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    await create(http, alice, name="alarm", is_private=True)
    # The owner's token grants the private topic, as the access rules say.
    assert (await push(http, "alarm", alice)).status_code == 200
    assert (await push(http, "alarm")).status_code == 401


async def test_topics_of_another_user_are_invisible(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    bob = await user(admin, "bob")
    mine = await create(http, alice, name="alice-door")
    await admin.create_topic("ownerless")  # made with the CLI: nobody's through the API
    assert (await http.get("/api/topics", headers=bob)).json() == {"topics": []}

    unknown = "0190a000-0000-7000-8000-000000000000"
    seen = []
    for topic_id in (mine["id"], unknown):
        answers = [
            await http.patch(f"/api/topics/{topic_id}", json={"name": "bobs-now"}, headers=bob),
            await http.delete(f"/api/topics/{topic_id}", headers=bob),
            await http.get(f"/api/topics/{topic_id}/keys", headers=bob),
            await http.post(f"/api/topics/{topic_id}/keys", json={}, headers=bob),
            await http.delete(f"/api/topics/{topic_id}/keys/{unknown}", headers=bob),
        ]
        assert [(r.status_code, r.json()["error"]) for r in answers] == [(404, "Topic not found")] * 5
        seen.append([r.text.replace(topic_id, "<id>") for r in answers])
    assert seen[0] == seen[1]  # a foreign topic answers exactly as an unknown id: no existence leak
    assert (await http.get("/api/topics", headers=alice)).json() == {"topics": [mine]}


async def test_private_through_patch_refuses_anonymous_push_at_once(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    topic = await create(http, alice, name="garage")
    assert (await push(http, "garage")).status_code == 200  # the topic is now cached as public

    response = await http.patch(f"/api/topics/{topic['id']}", json={"is_private": True}, headers=alice)
    assert response.status_code == 200 and response.json()["is_private"] is True
    refused = await push(http, "garage")
    assert_error(refused, 401)
    assert "private" in refused.json()["message"]

    await http.patch(f"/api/topics/{topic['id']}", json={"is_private": False}, headers=alice)
    assert (await push(http, "garage")).status_code == 200


async def test_rename_applies_at_once(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    topic = await create(http, alice, name="old-name")
    assert (await push(http, "old-name")).status_code == 200  # cached under the old name

    response = await http.patch(f"/api/topics/{topic['id']}", json={"name": "new-name"}, headers=alice)
    assert response.status_code == 200 and response.json()["name"] == "new-name"
    assert (await push(http, "old-name")).status_code == 404
    assert (await push(http, "new-name")).status_code == 200
    assert {m.topic_id for m in await stored_messages(server.config)} == {topic["id"]}


async def test_delete_removes_messages_keys_receipts_and_deliveries(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    doomed = await create(http, alice, name="doomed")
    kept = await create(http, alice, name="kept")
    await http.post(f"/api/topics/{doomed['id']}/keys", headers=alice)
    for name in ("doomed", "doomed", "kept"):
        assert (await push(http, name)).status_code == 200

    response = await http.delete(f"/api/topics/{doomed['id']}", headers=alice)
    assert response.status_code == 200
    assert response.json()["messages_deleted"] == 2

    assert [m.topic_id for m in await stored_messages(server.config)] == [kept["id"]]
    for model in (Receipt, ApiKey):
        query = select(func.count()).select_from(model).where(model.topic_id == doomed["id"])
        assert await count_rows(server.config, query) == 0, model.__name__
    orphans = select(func.count()).select_from(Delivery).outerjoin(Message).where(Message.id.is_(None))
    assert await count_rows(server.config, orphans) == 0
    assert await count_rows(server.config, select(func.count()).select_from(Receipt)) == 1

    gone = await push(http, "doomed")
    assert_error(gone, 404)
    assert gone.json()["error"] == 'Topic "doomed" not found'
    assert_error(await http.delete(f"/api/topics/{doomed['id']}", headers=alice), 404)


async def test_keys_generate_list_revoke(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    topic = await create(http, alice, name="front-door", is_private=True)
    keys_url = f"/api/topics/{topic['id']}/keys"

    response = await http.post(keys_url, json={"label": "esp32"}, headers=alice)
    assert response.status_code == 201, response.text
    issued = response.json()
    assert set(issued) == {"id", "key", "label", "created_at"} and issued["label"] == "esp32"
    unlabelled = (await http.post(keys_url, headers=alice)).json()  # no body at all
    assert unlabelled["label"] == ""

    assert (await push(http, "front-door", bearer(issued["key"]))).status_code == 200
    assert (await push(http, "front-door", {"x-api-key": unlabelled["key"]})).status_code == 200

    listing = await http.get(keys_url, headers=alice)
    assert listing.status_code == 200
    assert [k["id"] for k in listing.json()["keys"]] == [issued["id"], unlabelled["id"]]
    for key in listing.json()["keys"]:
        assert set(key) == {"id", "label", "created_at", "last_used_at", "revoked_at"}
        assert key["revoked_at"] is None
    assert issued["key"] not in listing.text and unlabelled["key"] not in listing.text
    [listed] = (await http.get("/api/topics", headers=alice)).json()["topics"]
    assert listed["key_count"] == 2

    revoked = await http.delete(f"{keys_url}/{issued['id']}", headers=alice)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["id"] == issued["id"] and revoked.json()["revoked_at"].endswith("Z")
    assert_error(await push(http, "front-door", bearer(issued["key"])), 401)
    assert (await push(http, "front-door", bearer(unlabelled["key"]))).status_code == 200

    again = await http.delete(f"{keys_url}/{issued['id']}", headers=alice)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # the first time is kept
    [listed] = (await http.get("/api/topics", headers=alice)).json()["topics"]
    assert listed["key_count"] == 1


async def test_a_key_of_another_topic_is_404(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    a = await create(http, alice, name="a", is_private=True)
    b = await create(http, alice, name="b", is_private=True)
    key_b = (await http.post(f"/api/topics/{b['id']}/keys", headers=alice)).json()

    response = await http.delete(f"/api/topics/{a['id']}/keys/{key_b['id']}", headers=alice)
    assert_error(response, 404)
    assert response.json()["error"] == "Key not found"
    assert (await push(http, "b", bearer(key_b["key"]))).status_code == 200  # still valid


async def test_deleting_a_topic_kills_its_keys(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    topic = await create(http, alice, name="temp", is_private=True)
    key = (await http.post(f"/api/topics/{topic['id']}/keys", headers=alice)).json()
    await http.delete(f"/api/topics/{topic['id']}", headers=alice)
    await create(http, alice, name="temp")  # the name is free again; the old key must not come back
    assert_error(await push(http, "temp", bearer(key["key"])), 401)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/topics"),
        ("POST", "/api/topics"),
        ("PATCH", "/api/topics/{id}"),
        ("DELETE", "/api/topics/{id}"),
        ("GET", "/api/topics/{id}/keys"),
        ("POST", "/api/topics/{id}/keys"),
        ("DELETE", "/api/topics/{id}/keys/{id}"),
    ],
)
async def test_every_endpoint_needs_a_user_token(
    server: Server, admin: Admin, http: httpx.AsyncClient, method: str, path: str
) -> None:
    topic = await admin.create_topic("t")
    key = await admin.create_key("t")
    url = path.format(id=topic.id)
    for headers in ({}, bearer(key.secret), bearer("pt_000000000000_not-a-real-token")):
        response = await http.request(method, url, json={"name": "x"}, headers=headers)
        body = assert_error(response, 401)
        assert "token" in body["message"], body
    assert [t.name for t, _ in await admin.list_topics()] == ["t"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "bad name!"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": 42}, "name"),
        ({"name": None}, "name"),
        ({"name": "ok", "is_private": "yes"}, "is_private"),
        ({"name": "ok", "is_private": 1}, "is_private"),
        ({"name": "ok", "description": ["a"]}, "description"),
        ({"name": "ok", "description": "d" * 1001}, "description"),
        ({"name": "ok", "private": True}, "private"),
        ([{"name": "ok"}], "body"),
    ],
)
async def test_create_with_invalid_fields_is_400_naming_the_field(
    server: Server, admin: Admin, http: httpx.AsyncClient, body: object, field: str
) -> None:
    alice = await user(admin, "alice")
    assert_error(await http.post("/api/topics", json=body, headers=alice), 400, field)
    assert await admin.list_topics() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad name!"}, "name"),
        ({"name": None}, "name"),
        ({"is_private": "true"}, "is_private"),
        ({"description": None}, "description"),
        ({"privat": True}, "privat"),
    ],
)
async def test_patch_with_invalid_fields_is_400_and_changes_nothing(
    server: Server, admin: Admin, http: httpx.AsyncClient, body: object, field: str
) -> None:
    alice = await user(admin, "alice")
    topic = await create(http, alice, name="t", description="kept")
    assert_error(await http.patch(f"/api/topics/{topic['id']}", json=body, headers=alice), 400, field)
    assert (await http.get("/api/topics", headers=alice)).json() == {"topics": [topic]}


async def test_patch_accepts_a_returned_object_back(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    topic = await create(http, alice, name="t")
    response = await http.patch(
        f"/api/topics/{topic['id']}", json={**topic, "is_private": True}, headers=alice
    )
    assert response.status_code == 200, response.text
    assert response.json() == {**topic, "is_private": True}


async def test_taken_names_are_409(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    bob = await user(admin, "bob")
    await create(http, alice, name="taken")
    other = await create(http, bob, name="other")
    # Names are global (they are the push URL), so another user's name is taken too.
    for headers in (alice, bob):
        body = assert_error(await http.post("/api/topics", json={"name": "taken"}, headers=headers), 409)
        assert "taken" in body["message"]
    response = await http.patch(f"/api/topics/{other['id']}", json={"name": "taken"}, headers=bob)
    assert_error(response, 409)
    assert [t["name"] for t in (await http.get("/api/topics", headers=bob)).json()["topics"]] == ["other"]
    # Renaming a topic to its own name is no conflict.
    response = await http.patch(f"/api/topics/{other['id']}", json={"name": "other"}, headers=bob)
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/api/topics", "/api/topics/{id}", "/api/topics/{id}/keys"])
async def test_malformed_json_is_400(
    server: Server, admin: Admin, http: httpx.AsyncClient, path: str
) -> None:
    alice = await user(admin, "alice")
    topic = await create(http, alice, name="t")
    method = "PATCH" if path == "/api/topics/{id}" else "POST"
    response = await http.request(
        method,
        path.format(id=topic["id"]),
        content=b'{"name": "unterminated',
        headers={**alice, "Content-Type": "application/json"},
    )
    body = assert_error(response, 400, "body")
    assert body["error"] == "Malformed JSON"


async def test_key_label_is_checked(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await user(admin, "alice")
    topic = await create(http, alice, name="t")
    url = f"/api/topics/{topic['id']}/keys"
    assert_error(await http.post(url, json={"label": 7}, headers=alice), 400, "label")
    assert_error(await http.post(url, json={"label": "l" * 101}, headers=alice), 400, "label")
    assert_error(await http.post(url, json={"lable": "typo"}, headers=alice), 400, "lable")
    assert (await http.get(url, headers=alice)).json() == {"keys": []}


async def test_collections_answer_with_a_trailing_slash_too(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    alice = await user(admin, "alice")
    response = await http.post("/api/topics/", json={"name": "slash"}, headers=alice, follow_redirects=False)
    assert response.status_code == 201
    topic_id = response.json()["id"]
    response = await http.post(f"/api/topics/{topic_id}/keys/", headers=alice, follow_redirects=False)
    assert response.status_code == 201
    for path in ("/api/topics/", f"/api/topics/{topic_id}/keys/"):
        assert (await http.get(path, headers=alice, follow_redirects=False)).status_code == 200
