"""Phones through Expo: the real gateway sends to a local Expo-compatible push API (``tests.expo_service``)
through ``exponent_server_sdk``, and reads the receipts back.

Batches of at most 100, tickets and receipts, expired devices, backoff on 429 and MessageRateExceeded,
the notification's fields, and receipt checks that survive a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.access import Principal
from gateway.admin import Admin
from gateway.channels.expo import MAX_PAYLOAD_BYTES, notification
from gateway.config import Config, ExpoConfig, OutboxConfig
from gateway.core import Gateway
from gateway.request import PushRequest
from gateway.storage import database
from gateway.storage.models import Delivery, ExpoTicket
from tests.conftest import Server, serving, until, user
from tests.expo_service import ExpoService

ACTIONS = [
    {"id": "approve", "label": "Approve", "type": "button"},
    {"id": "reject", "label": "Reject", "type": "button"},
]
ACCESS_TOKEN = "expo-access-token-for-tests"


def token(n: int) -> str:
    return f"ExponentPushToken[pushgate-test-{n:06d}]"


@pytest.fixture
async def expo() -> AsyncIterator[ExpoService]:
    service = await ExpoService().start()
    yield service
    await service.close()


@pytest.fixture
def config(config: Config, expo: ExpoService) -> Config:
    return dataclasses.replace(
        config,
        expo=ExpoConfig(
            base_url=expo.base_url,
            access_token=ACCESS_TOKEN,
            timeout=5.0,
            receipt_delay=0.0,
            max_attempts=5,
            backoff_base=0.2,
            backoff_max=2.0,
        ),
        outbox=OutboxConfig(poll_interval=0.1),
    )


async def setup_user(http: httpx.AsyncClient, admin: Admin, topic: str = "home") -> dict[str, str]:
    auth = await user(admin, "alice")
    response = await http.post("/api/topics", json={"name": topic, "is_private": True}, headers=auth)
    assert response.status_code == 201, response.text
    return auth


async def register(
    http: httpx.AsyncClient, auth: dict[str, str], push_token: str, platform: str = "ios"
) -> str:
    response = await http.post(
        "/api/devices", json={"platform": platform, "push_token": push_token}, headers=auth
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def push(http: httpx.AsyncClient, auth: dict[str, str], topic: str = "home", **fields: Any) -> Any:
    body = {"message": "Front door opened", **fields}
    response = await http.post(f"/api/push/{topic}", json=body, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


async def receipt(http: httpx.AsyncClient, auth: dict[str, str], receipt_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/receipts/{receipt_id}", headers=auth)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def device_status(http: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, str]:
    response = await http.get("/api/devices", headers=auth)
    assert response.status_code == 200, response.text
    return {device["id"]: device["status"] for device in response.json()["devices"]}


def settled(
    http: httpx.AsyncClient, auth: dict[str, str], receipt_id: str, **expected: Any
) -> Callable[[], Awaitable[Any]]:
    async def check() -> Any:
        found = await receipt(http, auth, receipt_id)
        return found if all(found[k] == v for k, v in expected.items()) else None

    return check


async def test_250_phones_in_batches_of_100_and_the_receipts_tell_the_truth(
    server: Server, admin: Admin, http: httpx.AsyncClient, expo: ExpoService
) -> None:
    auth = await setup_user(http, admin)
    tokens = [token(n) for n in range(250)]
    gone = tokens[117]
    expo.receipt_errors[gone] = "DeviceNotRegistered"
    ids = {}
    for n, push_token in enumerate(tokens):
        ids[push_token] = await register(http, auth, push_token, "ios" if n % 2 else "android")

    pushed = await push(http, auth, title="Door")
    assert pushed["subscribers"] == 250

    final = await until(
        settled(http, auth, pushed["receipt_id"], status="delivered", delivered_count=249),
        "249 ok receipts to be counted",
    )
    assert final["delivered_count"] == 249

    statuses = await until(
        lambda: _when(device_status(http, auth), lambda s: s[ids[gone]] == "expired"),
        "the device Expo no longer knows to be expired",
    )
    assert Counter(statuses.values()) == {"active": 249, "expired": 1}

    # Three requests of at most 100, covering every token exactly once.
    sizes = [len(request.body) for request in expo.sends]
    assert len(sizes) == 3 and max(sizes) <= 100, sizes
    assert Counter(message["to"] for message in expo.messages()) == Counter(tokens)
    asked = [ticket_id for request in expo.receipt_requests for ticket_id in request.body["ids"]]
    assert sorted(asked) == sorted(expo.tickets)  # every ticket's receipt read once
    assert all(len(request.body["ids"]) <= 1000 for request in expo.receipt_requests)
    assert (await receipt(http, auth, pushed["receipt_id"]))["delivered_count"] == 249  # and no more


async def _when(value: Awaitable[Any], ok: Callable[[Any], bool]) -> Any:
    found = await value
    return found if ok(found) else None


async def test_an_error_ticket_expires_the_device_at_once_and_nothing_more_goes_to_it(
    server: Server, admin: Admin, http: httpx.AsyncClient, expo: ExpoService
) -> None:
    auth = await setup_user(http, admin)
    expo.ticket_errors[token(1)] = "DeviceNotRegistered"
    uninstalled = await register(http, auth, token(1))
    kept = await register(http, auth, token(2), "android")

    first = await push(http, auth)
    assert first["subscribers"] == 2
    statuses = await until(
        lambda: _when(device_status(http, auth), lambda s: s[uninstalled] == "expired"),
        "the device to be expired",
    )
    assert statuses[kept] == "active"
    await until(settled(http, auth, first["receipt_id"], status="delivered", delivered_count=1), "a receipt")

    second = await push(http, auth, message="Back door opened")
    assert second["subscribers"] == 1
    await until(settled(http, auth, second["receipt_id"], status="delivered", delivered_count=1), "receipt")
    assert [m["body"] for m in expo.sent_to(token(1))] == ["Front door opened"]
    assert [m["body"] for m in expo.sent_to(token(2))] == ["Front door opened", "Back door opened"]
    assert len(expo.receipt_requests) >= 1 and all(
        expo.tickets[i] == token(2) for r in expo.receipt_requests for i in r.body["ids"]
    )


async def test_429_and_message_rate_exceeded_are_retried_with_backoff_and_delivered_once(
    server: Server, admin: Admin, http: httpx.AsyncClient, expo: ExpoService
) -> None:
    auth = await setup_user(http, admin)
    await register(http, auth, token(7))
    expo.send_statuses = [429]  # the first request: too many requests, Retry-After: 1
    expo.ticket_errors[token(7)] = ["MessageRateExceeded"]  # the second: an error ticket; then ok

    pushed = await push(http, auth)
    await until(settled(http, auth, pushed["receipt_id"], status="delivered", delivered_count=1), "delivery")

    attempts = expo.sends
    assert [len(request.body) for request in attempts] == [1, 1, 1]
    assert attempts[1].at - attempts[0].at >= expo.retry_after  # Retry-After honoured
    assert (
        attempts[2].at - attempts[1].at >= 0.2
    )  # backoff: after the 2nd failure, 0.4 s jittered to 50-100 %
    assert len(expo.tickets) == 1  # one notification accepted: delivered once
    assert sum(len(request.body["ids"]) for request in expo.receipt_requests) == 1
    rows = await _rows(server.config)
    assert [(row.state, row.attempts) for row in rows] == [("sent", 3)]


async def test_a_receipt_saying_message_rate_exceeded_sends_the_notification_again(
    server: Server, admin: Admin, http: httpx.AsyncClient, expo: ExpoService
) -> None:
    auth = await setup_user(http, admin)
    await register(http, auth, token(8))
    expo.receipt_errors[token(8)] = ["MessageRateExceeded"]  # the first receipt; the second is ok

    pushed = await push(http, auth)
    await until(settled(http, auth, pushed["receipt_id"], status="delivered", delivered_count=1), "delivery")
    assert len(expo.sent_to(token(8))) == 2 and len(expo.tickets) == 2
    assert sum(len(request.body["ids"]) for request in expo.receipt_requests) == 2


async def test_a_batch_expo_refuses_as_a_whole_is_split_until_it_goes_through(
    server: Server, admin: Admin, http: httpx.AsyncClient, expo: ExpoService
) -> None:
    auth = await setup_user(http, admin)
    for n in (10, 11, 12):
        await register(http, auth, token(n))
    expo.send_statuses = [400]  # the batch of three is refused (a VALIDATION_ERROR)

    pushed = await push(http, auth)
    await until(settled(http, auth, pushed["receipt_id"], status="delivered", delivered_count=3), "delivery")
    assert [len(request.body) for request in expo.sends] == [3, 1, 2]
    assert Counter(message["to"] for message in expo.messages()[3:]) == Counter(
        token(n) for n in (10, 11, 12)
    )


async def _rows(config: Config) -> list[Delivery]:
    engine = database.create_engine(config.storage)
    try:
        async with database.session_factory(engine)() as session:
            return list(await session.scalars(select(Delivery).where(Delivery.channel == "expo")))
    finally:
        await engine.dispose()


async def _tickets(config: Config) -> list[ExpoTicket]:
    engine = database.create_engine(config.storage)
    try:
        async with database.session_factory(engine)() as session:
            return list(await session.scalars(select(ExpoTicket)))
    finally:
        await engine.dispose()


async def test_the_notification_carries_category_priority_sound_ttl_and_data(
    server: Server, admin: Admin, http: httpx.AsyncClient, expo: ExpoService
) -> None:
    auth = await setup_user(http, admin)
    await register(http, auth, token(3))
    pushed = await push(
        http,
        auth,
        title="Deploy",
        message="Release v2.1.0 to production?",
        priority="urgent",
        sound="siren",
        ttl=3600,
        actions=ACTIONS,
        click_url="https://ci.example.com/runs/42",
    )
    quiet = await push(http, auth, message="Laundry done", priority="low")
    await until(lambda: _when(asyncio.sleep(0, expo.messages()), lambda m: len(m) == 2), "two notifications")

    first, second = expo.messages()
    assert first == {
        "to": token(3),
        "title": "Deploy",
        "body": "Release v2.1.0 to production?",
        "priority": "high",
        "sound": "siren",
        "ttl": 3600,
        "categoryId": "approve_reject",
        "data": {
            "id": pushed["id"],
            "receipt_id": pushed["receipt_id"],
            "topic": "home",
            "priority": "urgent",
            "tags": [],
            "click_url": "https://ci.example.com/runs/42",
            "actions": ACTIONS,
            "category": "approve_reject",
            "timestamp": pushed["timestamp"],
        },
    }
    assert second["priority"] == "normal" and second["sound"] == "default"
    assert "ttl" not in second and "categoryId" not in second and "title" not in second
    assert second["data"]["id"] == quiet["id"] and second["data"]["receipt_id"] == quiet["receipt_id"]
    # As the SDK sends them: JSON, gzip accepted, the access token as a bearer token.
    headers = expo.sends[0].headers
    assert headers["content-type"] == "application/json"
    assert "gzip" in headers["accept-encoding"]
    assert headers["authorization"] == f"Bearer {ACCESS_TOKEN}"


def test_a_body_too_long_for_expo_is_shortened_to_fit() -> None:
    envelope = {"id": "m", "receipt_id": "r", "topic": "t", "title": "T", "message": "é" * 4000}
    made = notification(token(1), envelope, None, None)
    payload = made.get_payload()
    assert payload["body"].endswith("…") and payload["data"]["truncated"] is True

    assert len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()) <= MAX_PAYLOAD_BYTES


async def test_a_receipt_check_pending_at_shutdown_is_done_after_the_restart(
    config: Config, admin: Admin, expo: ExpoService
) -> None:
    waiting = dataclasses.replace(config, expo=dataclasses.replace(config.expo, receipt_delay=3600.0))
    async with serving(waiting) as http:
        auth = await setup_user(http, admin)
        await register(http, auth, token(5))
        pushed = await push(http, auth)
        tickets = await until(lambda: _tickets(config), "the ticket to be stored")
        await until(
            lambda: _when(_rows(config), lambda rows: rows[0].state == "sent"), "the delivery to be sent"
        )
    assert [t.ticket_id for t in tickets] == list(expo.tickets) and expo.receipt_requests == []

    async with serving(config) as http:  # the delay is over (0 s now): the check is due at once
        final = await until(
            settled(http, auth, pushed["receipt_id"], status="delivered", delivered_count=1), "the receipt"
        )
        assert final["delivered_count"] == 1
        assert [r.body["ids"] for r in expo.receipt_requests] == [[tickets[0].ticket_id]]
        assert await _tickets(config) == []
    assert len(expo.sends) == 1  # the notification itself was not sent again


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.at = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # only the emergency scheduler sleeps on it here; nothing waits on it


async def test_receipts_are_read_receipt_delay_after_the_send_by_the_gateways_clock(
    config: Config, admin: Admin, expo: ExpoService
) -> None:
    clock = Clock()
    config = dataclasses.replace(config, expo=dataclasses.replace(config.expo, receipt_delay=900.0))
    async with Gateway.running(config, clock=clock) as gateway:
        gateway.start_delivery()
        alice = await admin.create_user("alice")
        principal = Principal("user", user_id=alice.id, label="alice")
        await gateway.admin.create_topic("home", private=True, owner="alice")
        await gateway.devices.register(principal, {"platform": "ios", "push_token": token(9)})
        answer = await gateway.publish(
            PushRequest(topic="home", message="Front door opened", source="http", credential=alice.secret)
        )
        await until(lambda: _when(_rows(config), lambda rows: rows[0].state == "sent"), "the send")
        assert gateway.expo_receipts is not None

        clock.at += timedelta(seconds=899)
        assert await gateway.expo_receipts.check_due() == 0  # 14 min 59 s: not yet
        assert expo.receipt_requests == []

        clock.at += timedelta(seconds=1)  # 15 minutes after the send

        async def delivered() -> Any:
            got = await gateway.receipts.get(principal, answer.receipt_id)
            return got if got["status"] == "delivered" else None

        final = await until(delivered, "the receipt to be read")
        assert final["delivered_count"] == 1
        assert len(expo.receipt_requests) == 1
