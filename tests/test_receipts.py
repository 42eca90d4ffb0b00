"""``GET /api/receipts/<id>`` and ``GET /api/receipts``: the shape, who may read, filters, and pages.

Receipts come from real pushes over HTTP. Status changes and creation times that no endpoint sets yet
(actions, reads, ties in ``created_at``) are written into the database through a separate engine. This
is the same access the ``admin`` fixture uses, and it sets up data without replacing any code.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

import gateway.receipts
import http_bridge.receipts
from gateway.admin import Admin
from gateway.config import Config
from gateway.receipts import Cursor
from gateway.storage import database
from gateway.storage.models import Receipt
from tests.conftest import Server, bearer

RECEIPT_FIELDS = [
    "receipt_id",
    "message_id",
    "topic_id",
    "status",
    "delivered_count",
    "read_count",
    "acted_count",
    "actions_taken",
    "created_at",
    "updated_at",
]


async def push(
    http: httpx.AsyncClient, topic: str, headers: dict[str, str], text: str = "x"
) -> dict[str, Any]:
    response = await http.post(f"/api/push/{topic}", content=text, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def push_many(
    http: httpx.AsyncClient, topic: str, headers: dict[str, str], count: int, batch: int = 25
) -> list[str]:
    """Publish ``count`` messages, ``batch`` at a time concurrently; return their receipt ids."""
    ids: list[str] = []
    for start in range(0, count, batch):
        answers = await asyncio.gather(
            *(push(http, topic, headers, f"m{i}") for i in range(start, min(count, start + batch)))
        )
        ids += [a["receipt_id"] for a in answers]
    return ids


async def set_receipts(config: Config, values: dict[str, dict[str, Any]]) -> None:
    """Write columns of receipts (by id) in one transaction, as another process would."""
    engine = database.create_engine(config.storage)
    try:
        async with database.session_factory(engine)() as session:
            for receipt_id, columns in values.items():
                await session.execute(update(Receipt).where(Receipt.id == receipt_id).values(**columns))
            await session.commit()
    finally:
        await engine.dispose()


async def walk(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    params: dict[str, str],
    between_pages: Any = None,
) -> list[dict[str, Any]]:
    """Follow next_cursor to the end; ``between_pages(page)`` runs after each page but the last."""
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        query = dict(params, cursor=cursor) if cursor else params
        response = await http.get("/api/receipts", params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert list(page) == ["receipts", "next_cursor"]
        seen += page["receipts"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        assert page["receipts"], "a page with a next_cursor is never empty"
        if between_pages is not None:
            await between_pages(page)
    raise AssertionError("the walk did not end")


def test_public_surface() -> None:
    assert gateway.receipts.__all__ == [
        "DEFAULT_LIMIT",
        "MAX_LIMIT",
        "STATUSES",
        "Cursor",
        "ReceiptPage",
        "ReceiptQuery",
        "Receipts",
        "receipt_dict",
    ]
    assert http_bridge.receipts.__all__ == ["blueprint"]


async def test_receipt_shape_right_after_a_push(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    topic = await admin.create_topic("door", private=True)
    key = await admin.create_key("door")
    answer = await push(http, "door", {"x-api-key": key.secret}, "Door opened")

    for headers in ({"X-Api-Key": key.secret}, {"api-key": key.secret}, bearer(key.secret)):
        response = await http.get(f"/api/receipts/{answer['receipt_id']}", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        receipt = response.json()
        assert list(receipt) == RECEIPT_FIELDS
        assert receipt == {
            "receipt_id": answer["receipt_id"],
            "message_id": answer["id"],
            "topic_id": topic.id,
            "status": "queued",  # no MQTT subscriber: nothing delivered yet
            "delivered_count": 0,
            "read_count": 0,
            "acted_count": 0,
            "actions_taken": [],
            "created_at": answer["timestamp"],
            "updated_at": answer["timestamp"],
        }
    # a trailing slash reaches the same handler (no redirect)
    response = await http.get(f"/api/receipts/{answer['receipt_id']}/", headers=bearer(key.secret))
    assert response.status_code == 200 and response.json()["receipt_id"] == answer["receipt_id"]


async def test_actions_taken_are_returned_as_stored(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    await admin.create_topic("gate", private=True)
    key = await admin.create_key("gate")
    answer = await push(http, "gate", bearer(key.secret))
    acted = {
        "action_id": "approve",
        "action_label": "Approve",
        "reply_text": None,
        "device_name": "Vincent's iPhone",
        "acted_at": "2026-04-10T00:10:22Z",
    }
    updated = datetime(2026, 4, 10, 0, 10, 22, 123456, tzinfo=UTC)
    await set_receipts(
        server.config,
        {
            answer["receipt_id"]: {
                "status": "acted",
                "delivered_count": 3,
                "read_count": 2,
                "acted_count": 1,
                "actions_taken": [acted],
                "updated_at": updated,
            }
        },
    )
    receipt = (await http.get(f"/api/receipts/{answer['receipt_id']}", headers=bearer(key.secret))).json()
    assert receipt["status"] == "acted"
    assert (receipt["delivered_count"], receipt["read_count"], receipt["acted_count"]) == (3, 2, 1)
    assert receipt["actions_taken"] == [acted]
    assert receipt["updated_at"] == "2026-04-10T00:10:22Z"


async def test_a_key_reads_its_own_topic_only(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    topic_a = await admin.create_topic("a", private=True)
    await admin.create_topic("b", private=True)
    key_a = await admin.create_key("a")
    key_b = await admin.create_key("b")
    mine = await push(http, "a", bearer(key_a.secret))
    theirs = await push(http, "b", bearer(key_b.secret))

    response = await http.get(f"/api/receipts/{mine['receipt_id']}", headers=bearer(key_a.secret))
    assert response.status_code == 200
    foreign = await http.get(f"/api/receipts/{theirs['receipt_id']}", headers=bearer(key_a.secret))
    missing = await http.get(
        "/api/receipts/0190f0f0-0000-7000-8000-000000000000", headers=bearer(key_a.secret)
    )
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"] == "Receipt not found"
    assert foreign.json() == missing.json(), "a foreign receipt must look exactly like a missing one"

    listed = (await http.get("/api/receipts", headers=bearer(key_a.secret))).json()
    assert [r["receipt_id"] for r in listed["receipts"]] == [mine["receipt_id"]]
    assert listed["receipts"][0]["topic_id"] == topic_a.id
    # naming another topic does not widen what a key sees
    listed = (await http.get("/api/receipts", params={"topic_id": "b"}, headers=bearer(key_a.secret))).json()
    assert listed == {"receipts": [], "next_cursor": None}


async def test_a_user_token_reads_owned_topics(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await admin.create_user("alice")
    bob = await admin.create_user("bob")
    await admin.create_topic("alice-home", private=True, owner="alice")
    await admin.create_topic("bob-home", private=True, owner="bob")
    public = await admin.create_topic("town")  # public, owned by nobody
    own = await push(http, "alice-home", bearer(alice.secret))
    bobs = await push(http, "bob-home", bearer(bob.secret))
    town = await push(http, "town", {})

    assert (
        await http.get(f"/api/receipts/{own['receipt_id']}", headers=bearer(alice.secret))
    ).status_code == 200
    response = await http.get(f"/api/receipts/{bobs['receipt_id']}", headers=bearer(alice.secret))
    assert (response.status_code, response.json()["error"]) == (404, "Receipt not found")
    response = await http.get(f"/api/receipts/{own['receipt_id']}", headers=bearer(bob.secret))
    assert response.status_code == 404
    # one receipt of a public topic is readable by id, like the topic itself ...
    response = await http.get(f"/api/receipts/{town['receipt_id']}", headers=bearer(alice.secret))
    assert (response.status_code, response.json()["topic_id"]) == (200, public.id)

    # ... but the list holds only the topics the user owns (see gateway.receipts)
    listed = (await http.get("/api/receipts", headers=bearer(alice.secret))).json()
    assert [r["receipt_id"] for r in listed["receipts"]] == [own["receipt_id"]]
    listed = (
        await http.get("/api/receipts", params={"topic_id": public.id}, headers=bearer(alice.secret))
    ).json()
    assert listed["receipts"] == []
    listed = (await http.get("/api/receipts", headers=bearer(bob.secret))).json()
    assert [r["receipt_id"] for r in listed["receipts"]] == [bobs["receipt_id"]]


async def test_anonymous_and_invalid_credentials_are_401(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    await admin.create_topic("town")
    answer = await push(http, "town", {})
    for path in (f"/api/receipts/{answer['receipt_id']}", "/api/receipts", "/api/receipts?status=bogus"):
        response = await http.get(path)
        assert response.status_code == 401, path
        body = response.json()
        assert list(body) == ["error", "message"]
        assert "token" in body["message"] and "key" in body["message"]
    response = await http.get("/api/receipts", headers=bearer("pk_000000000000_wrong"))
    assert response.status_code == 401
    assert list(response.json()) == ["error", "message"]


async def test_filters(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    alice = await admin.create_user("alice")
    kitchen = await admin.create_topic("kitchen", private=True, owner="alice")
    await admin.create_topic("garage", private=True, owner="alice")
    k = await push_many(http, "kitchen", bearer(alice.secret), 3)
    g = await push_many(http, "garage", bearer(alice.secret), 2)
    base = datetime(2026, 4, 10, 0, 0, 0, tzinfo=UTC)
    # creation times one minute apart, k[0] oldest ... g[1] newest; g[0] acted, k[2] read
    times = {rid: base + timedelta(minutes=i) for i, rid in enumerate(k + g)}
    await set_receipts(server.config, {rid: {"created_at": at} for rid, at in times.items()})
    await set_receipts(server.config, {g[0]: {"status": "acted"}, k[2]: {"status": "read"}})

    async def ids(**params: str) -> list[str]:
        response = await http.get("/api/receipts", params=params, headers=bearer(alice.secret))
        assert response.status_code == 200, response.text
        return [r["receipt_id"] for r in response.json()["receipts"]]

    assert await ids() == list(reversed(k + g)), "newest first"
    assert await ids(topic_id=kitchen.id) == list(reversed(k))
    assert await ids(topic_id="garage") == list(reversed(g)), "a topic name works too"
    assert await ids(topic_id="nope") == []
    assert await ids(status="acted") == [g[0]]
    assert await ids(status="read", topic_id=kitchen.id) == [k[2]]
    assert await ids(status="queued") == [g[1], k[1], k[0]]
    assert await ids(status="failed") == []
    # since is strictly after; Z, offsets, a '+' turned into a space by URL decoding, and naive (UTC)
    assert await ids(since="2026-04-10T00:02:00Z") == [g[1], g[0]]
    assert await ids(since="2026-04-10T02:02:00+02:00") == [g[1], g[0]]
    response = await http.get(
        "/api/receipts?since=2026-04-10T02:02:00 02:00".replace(" ", "%20"), headers=bearer(alice.secret)
    )
    assert [r["receipt_id"] for r in response.json()["receipts"]] == [g[1], g[0]]
    assert await ids(since="2026-04-10T00:03:30") == [g[1]]
    assert await ids(since="2026-04-10") == list(reversed(k + g))[:-1], "midnight itself is not after"
    assert await ids(since="2026-04-11T00:00:00Z") == []
    assert await ids(since="2026-04-10T00:00:00Z", status="queued", topic_id="kitchen") == [k[1]]
    # empty values are absent values
    assert await ids(status="", since="", cursor="", limit="", topic_id="") == list(reversed(k + g))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "bogus"}, "status"),
        ({"status": "QUEUED"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-13-01T00:00:00Z"}, "since"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-3"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": "1_0"}, "limit"),
        ({"cursor": "not a cursor!"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"2:5:abc").decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"1:99999999999999999999:abc").decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "cursor"),
    ],
)
async def test_invalid_parameters_are_400_naming_the_field(
    server: Server, admin: Admin, http: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    alice = await admin.create_user("alice")
    response = await http.get("/api/receipts", params=params, headers=bearer(alice.secret))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == field
    assert body["error"] == f"Invalid field '{field}'"
    assert body["message"]


def test_cursor_round_trip_keeps_microseconds() -> None:
    at = datetime(2026, 4, 10, 0, 6, 1, 999999, tzinfo=UTC)
    cursor = Cursor(at, "0190f0f0-0000-7000-8000-000000000001")
    text = cursor.encode()
    assert "=" not in text and "/" not in text and "+" not in text
    assert Cursor.decode(text) == cursor
    # naive times are UTC, as SQLite hands them back
    assert Cursor.decode(Cursor(at.replace(tzinfo=None), cursor.id).encode()) == cursor


async def _250_receipts_with_ties(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> tuple[str, dict[str, datetime]]:
    """250 receipts over two of alice's topics, whose creation times fall into 13 shared values
    assigned across the id order, so ties are many and id order says nothing about time order."""
    alice = await admin.create_user("alice")
    await admin.create_topic("p1", private=True, owner="alice")
    await admin.create_topic("p2", private=True, owner="alice")
    ids = await push_many(http, "p1", bearer(alice.secret), 125)
    ids += await push_many(http, "p2", bearer(alice.secret), 125)
    assert len(set(ids)) == 250
    base = datetime.now(UTC) - timedelta(days=1)
    times = {rid: base + timedelta(seconds=i % 13) for i, rid in enumerate(sorted(ids))}
    await set_receipts(server.config, {rid: {"created_at": at} for rid, at in times.items()})
    return alice.secret, times


def newest_first(times: dict[str, datetime]) -> list[str]:
    return sorted(times, key=lambda rid: (times[rid], rid), reverse=True)


@pytest.mark.parametrize("limit", [7, None], ids=["limit=7", "default"])
async def test_walking_all_pages_yields_each_receipt_once(
    server: Server, admin: Admin, http: httpx.AsyncClient, limit: int | None
) -> None:
    token, times = await _250_receipts_with_ties(server, admin, http)
    params = {"limit": str(limit)} if limit else {}
    pages: list[int] = []

    async def count(page: dict[str, Any]) -> None:
        pages.append(len(page["receipts"]))

    walked = [r["receipt_id"] for r in await walk(http, bearer(token), params, count)]
    assert walked == newest_first(times), "every receipt once, newest first, ties broken by id"
    page_size = limit or gateway.receipts.DEFAULT_LIMIT
    assert pages == [page_size] * (250 // page_size - (250 % page_size == 0))

    # a limit above the maximum is clamped, not refused
    response = await http.get("/api/receipts", params={"limit": "1000"}, headers=bearer(token))
    assert response.status_code == 200
    assert len(response.json()["receipts"]) == gateway.receipts.MAX_LIMIT
    assert response.json()["next_cursor"] is not None


@pytest.mark.parametrize("limit", [7, None], ids=["limit=7", "default"])
async def test_pages_stay_stable_while_receipts_are_added(
    server: Server, admin: Admin, http: httpx.AsyncClient, limit: int | None
) -> None:
    """After each page three more messages are pushed: one stays newest, one is given the creation time
    of the page's last receipt (a tie at the cursor), one an older time (it lands in the pages to come)."""
    token, times = await _250_receipts_with_ties(server, admin, http)
    originals = set(times)
    added: set[str] = set()
    oldest = min(times.values())
    assigned = dict(times)

    async def push_more(page: dict[str, Any]) -> None:
        last = assigned[page["receipts"][-1]["receipt_id"]]  # an added receipt may end a page too
        new = await push_many(http, "p1", bearer(token), 3)
        added.update(new)
        assigned.update({new[1]: last, new[2]: oldest})
        await set_receipts(server.config, {new[1]: {"created_at": last}, new[2]: {"created_at": oldest}})

    params = {"limit": str(limit)} if limit else {}
    walked = [r["receipt_id"] for r in await walk(http, bearer(token), params, push_more)]
    assert len(walked) == len(set(walked)), "no receipt twice"
    assert set(walked) <= originals | added
    assert [rid for rid in walked if rid in originals] == newest_first(times), "each original exactly once"
    assert added & set(walked), "receipts added behind the cursor show up in later pages"
