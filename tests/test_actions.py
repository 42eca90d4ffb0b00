"""Two-way notifications: a push with actions, a tap over HTTP and a reply over MQTT, the receipt that
records both, and the action and receipt events a hub receives (issue 4, acceptance 1 without webhooks)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from gateway.admin import Admin
from tests.conftest import MqttClient, Server, until

ACK_SNOOZE_REPLY = {
    "title": "Server Alert",
    "message": "CPU usage at 95% on prod-01. Acknowledge or snooze?",
    "priority": "high",
    "actions": [
        {"id": "ack", "label": "Acknowledge", "type": "button"},
        {"id": "snooze", "label": "Snooze 15m", "type": "button"},
        {"id": "reply", "label": "Reply", "type": "reply"},
    ],
}
APPROVE_REJECT = {
    "title": "Deployment Request",
    "message": "Release v2.1.0 to production — requested by @alice",
    "priority": "high",
    "actions": [
        {"id": "approve", "label": "Approve", "type": "button"},
        {"id": "reject", "label": "Reject", "type": "button", "destructive": True},
    ],
    "callback_url": "https://your-server.com/deploy-webhook",
}


async def test_approve_over_http_and_reply_over_mqtt(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client
) -> None:
    await admin.create_topic("ops", private=True)
    key = (await admin.create_key("ops", label="prod-01")).secret
    auth = {"Authorization": f"Bearer {key}"}
    hub: MqttClient = await make_client(username="home-hub", password=key)
    assert await hub.subscribe("pushgate/ops/action") == 1
    assert await hub.subscribe("pushgate/ops/receipt") == 1

    deploy = (await http.post("/api/push/ops", json=APPROVE_REJECT, headers=auth)).json()
    alert = (await http.post("/api/push/ops", json=ACK_SNOOZE_REPLY, headers=auth)).json()

    response = await http.post(
        "/api/action",
        json={"message_id": deploy["id"], "action_id": "approve", "reply_text": None},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["action"]["action_id"] == "approve" and answer["receipt"]["status"] == "acted"

    device: MqttClient = await make_client(username="esp32", password=key)
    reply = {"message_id": alert["id"], "action_id": "reply", "reply_text": "on it, restarting workers"}
    await device.publish("pushgate/ops/act", json.dumps(reply), qos=1)  # PUBACK once stored

    events = {}
    for _ in range(4):  # two action events and two receipt updates, in any order across topics
        message = await hub.receive()
        events.setdefault(message.topic, []).append(json.loads(message.payload))
    actions = {e["action_id"]: e for e in events["pushgate/ops/action"]}
    assert actions["approve"] == {
        "event": "action",
        "message_id": deploy["id"],
        "topic": "ops",
        "action_id": "approve",
        "action_label": "Approve",
        "reply_text": None,
        "device_name": None,
        "acted_at": actions["approve"]["acted_at"],
    }
    assert actions["reply"]["reply_text"] == "on it, restarting workers"
    assert actions["reply"]["action_label"] == "Reply"
    assert {r["receipt_id"] for r in events["pushgate/ops/receipt"]} == {
        deploy["receipt_id"],
        alert["receipt_id"],
    }

    for pushed, action_id, reply_text in (
        (deploy, "approve", None),
        (alert, "reply", "on it, restarting workers"),
    ):
        receipt = (await http.get(f"/api/receipts/{pushed['receipt_id']}", headers=auth)).json()
        assert receipt["status"] == "acted" and receipt["acted_count"] == 1
        [taken] = receipt["actions_taken"]
        assert (taken["action_id"], taken["reply_text"]) == (action_id, reply_text)


async def test_action_errors_name_the_problem(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client
) -> None:
    await admin.create_topic("ops", private=True)
    await admin.create_topic("other", private=True)
    key = (await admin.create_key("ops")).secret
    other_key = (await admin.create_key("other")).secret
    pushed = (await http.post("/api/push/ops", json=APPROVE_REJECT, headers={"x-api-key": key})).json()

    async def act(body: object, credential: str | None = key) -> httpx.Response:
        headers = {"x-api-key": credential} if credential else {}
        return await http.post("/api/action", json=body, headers=headers)

    cases = [
        (act({"message_id": pushed["id"], "action_id": "approve"}, None), 401, None),
        (act({"message_id": pushed["id"], "action_id": "approve"}, other_key), 404, None),
        (act({"message_id": "01a20000-0000-7000-8000-000000000000", "action_id": "approve"}), 404, None),
        (act({"message_id": pushed["id"], "action_id": "launch"}), 400, "action_id"),
        (act({"message_id": pushed["id"]}), 400, "action_id"),
        (act({"action_id": "approve"}), 400, "message_id"),
        (act({"message_id": pushed["id"], "action_id": "approve", "reply_text": 5}), 400, "reply_text"),
        (act({"message_id": pushed["id"], "action_id": "approve", "device_id": "nope"}), 400, "device_id"),
        (act([1, 2]), 400, "body"),
    ]
    for pending, status, field in cases:
        response = await pending
        assert response.status_code == status, response.text
        assert "error" in response.json() and "message" in response.json()
        if field:
            assert response.json()["field"] == field
    not_found = (await act({"message_id": pushed["id"], "action_id": "approve"}, other_key)).json()
    missing = (
        await act({"message_id": "01a20000-0000-7000-8000-000000000000", "action_id": "approve"})
    ).json()
    assert not_found["error"] == missing["error"] == "Message not found"

    receipt = (await http.get(f"/api/receipts/{pushed['receipt_id']}", headers={"x-api-key": key})).json()
    assert receipt["status"] == "queued" and receipt["actions_taken"] == []  # nothing recorded by errors

    hub: MqttClient = await make_client(password=key)
    assert await hub.subscribe("pushgate/ops/error") == 1
    device: MqttClient = await make_client(password=key)
    await device.publish(
        "pushgate/ops/act", json.dumps({"message_id": pushed["id"], "action_id": "x"}), qos=1
    )
    error = json.loads((await hub.receive()).payload)
    assert (error["status"], error["field"]) == (400, "action_id")


@pytest.mark.parametrize("taps", [8])
async def test_concurrent_taps_are_all_recorded(
    server: Server, admin: Admin, http: httpx.AsyncClient, taps: int
) -> None:

    await admin.create_topic("ops")
    key = (await admin.create_key("ops")).secret
    pushed = (await http.post("/api/push/ops", json=ACK_SNOOZE_REPLY, headers={"x-api-key": key})).json()
    body = {"message_id": pushed["id"], "action_id": "ack"}
    responses = await asyncio.gather(
        *(http.post("/api/action", json=body, headers={"x-api-key": key}) for _ in range(taps))
    )
    assert {r.status_code for r in responses} == {200}
    receipt = (await http.get(f"/api/receipts/{pushed['receipt_id']}", headers={"x-api-key": key})).json()
    assert receipt["acted_count"] == taps and len(receipt["actions_taken"]) == taps


async def test_read_moves_the_receipt_forward_and_never_back(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client
) -> None:
    await admin.create_topic("ops", private=True)
    key = {"x-api-key": (await admin.create_key("ops")).secret}
    hub: MqttClient = await make_client(password=key["x-api-key"])
    assert await hub.subscribe("pushgate/ops/receipt") == 1
    pushed = (await http.post("/api/push/ops", json=APPROVE_REJECT, headers=key)).json()

    read = await http.post("/api/read", json={"message_id": pushed["id"]}, headers=key)
    assert read.status_code == 200 and read.json()["receipt"]["status"] == "read"
    assert json.loads((await hub.receive()).payload)["read_count"] == 1
    await http.post("/api/action", json={"message_id": pushed["id"], "action_id": "reject"}, headers=key)
    await http.post("/api/read", json={"message_id": pushed["id"]}, headers=key)
    receipt = (await http.get(f"/api/receipts/{pushed['receipt_id']}", headers=key)).json()
    assert (receipt["status"], receipt["read_count"], receipt["acted_count"]) == ("acted", 2, 1)
    assert (await http.post("/api/read", json={"message_id": pushed["id"]})).status_code == 401


async def test_unread_messages_expire_after_their_ttl(config) -> None:
    from datetime import timedelta

    from gateway.core import Gateway
    from gateway.request import PushRequest

    async with Gateway.running(config) as gw:
        await gw.admin.create_topic("t")
        key = await gw.admin.create_key("t")
        principal = await gw.access.authenticate(key.secret)
        short = await gw.publish(PushRequest(topic="t", message="expires", ttl=60, source="test"))
        read = await gw.publish(PushRequest(topic="t", message="read in time", ttl=60, source="test"))
        forever = await gw.publish(PushRequest(topic="t", message="no ttl", source="test"))
        await gw.actions.read(principal, read.id)

        assert await gw.actions.expire_due(now=short.timestamp + timedelta(seconds=59)) == 0
        assert await gw.actions.expire_due(now=short.timestamp + timedelta(seconds=61)) == 1
        statuses = {}
        for result in (short, read, forever):
            statuses[result.id] = (await gw.receipts.get(principal, result.receipt_id))["status"]
        assert statuses == {short.id: "expired", read.id: "read", forever.id: "queued"}
        assert await gw.actions.expire_due(now=short.timestamp + timedelta(days=1)) == 0  # once only


@pytest.mark.parametrize(
    ("ids", "category"),
    [
        (["ack"], "ack"),
        (["comment"], "reply"),
        (["snooze", "ack"], "ack_snooze"),
        (["approve", "reject", "comment"], "approve_reject_comment"),
        (["ack", "escalate", "reply"], "ack_escalate_reply"),
        (["approve", "launch"], None),
        ([], None),
    ],
)
async def test_envelope_carries_the_category_of_predefined_action_sets(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client, ids: list[str], category: str | None
) -> None:
    await admin.create_topic("ops")
    hub: MqttClient = await make_client()
    assert await hub.subscribe("pushgate/ops/message") == 1
    actions = [{"id": i, "label": i.title(), "type": "button"} for i in ids]
    assert (await http.post("/api/push/ops", json={"message": "m", "actions": actions})).status_code == 200
    assert json.loads((await hub.receive()).payload)["category"] == category


async def test_delivered_is_announced_and_unheard_receipt_updates_are_not_stored(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client
) -> None:
    from sqlalchemy import select

    from gateway.storage import database
    from gateway.storage.models import Delivery, Receipt

    await admin.create_topic("ops")
    hub: MqttClient = await make_client()
    assert await hub.subscribe("pushgate/ops/message") == 1
    assert await hub.subscribe("pushgate/ops/receipt") == 1
    pushed = (await http.post("/api/push/ops", content="reaches the hub")).json()
    received = {}
    for _ in range(2):
        message = await hub.receive()
        received[message.topic] = json.loads(message.payload)
    assert received["pushgate/ops/message"]["id"] == pushed["id"]
    receipt = received["pushgate/ops/receipt"]
    assert (receipt["receipt_id"], receipt["status"], receipt["delivered_count"]) == (
        pushed["receipt_id"],
        "delivered",
        1,
    )

    # On a topic where nobody listens to …/receipt, the delivered update is not stored, let alone left
    # waiting: the receipt turns delivered in the transaction that would have added the row.
    await admin.create_topic("quiet")
    assert await hub.subscribe("pushgate/quiet/message") == 1
    marker = (await http.post("/api/push/quiet", content="second")).json()
    assert json.loads((await hub.receive()).payload)["id"] == marker["id"]
    engine = database.create_engine(server.config.storage)
    sessions = database.session_factory(engine)

    async def delivered() -> bool:
        async with sessions() as session:
            status = await session.scalar(select(Receipt.status).where(Receipt.message_id == marker["id"]))
        return status == "delivered"

    try:
        await until(delivered, "the receipt to turn delivered")
        async with sessions() as session:
            events = await session.scalars(
                select(Delivery.event).where(Delivery.message_id == marker["id"], Delivery.event != "")
            )
            assert list(events) == []
    finally:
        await engine.dispose()
