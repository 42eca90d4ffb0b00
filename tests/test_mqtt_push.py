"""A device pushes over MQTT and a hub receives the envelope; HTTP pushes reach the same hub; all stored."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from broker.server import PushgateBroker
from gateway.admin import Admin
from gateway.config import Config
from gateway.core import Gateway
from gateway.request import PushRequest
from tests.conftest import MqttClient, Server, bearer, rows, served, stored_messages, until


async def test_device_push_qos0_and_qos1_reach_the_hub_and_are_stored(
    server: Server, admin: Admin, make_client, http: httpx.AsyncClient
) -> None:
    await admin.create_topic("my-topic")
    key = await admin.create_key("my-topic", label="esp32")

    hub: MqttClient = await make_client()
    assert await hub.subscribe("pushgate/my-topic/message") == 1
    device: MqttClient = await make_client(username="esp32-kitchen", password=key.secret)

    await device.publish("pushgate/my-topic/push", "Sensor triggered!", qos=0)
    first = json.loads((await hub.receive()).payload)
    await device.publish("pushgate/my-topic/push", "Sensor triggered!", qos=1)
    second = json.loads((await hub.receive()).payload)
    response = await http.post("/api/push/my-topic", content="Hello from my Pi!")
    assert response.status_code == 200
    third = json.loads((await hub.receive()).payload)

    for envelope in (first, second):
        assert envelope["topic"] == "my-topic"
        assert envelope["message"] == "Sensor triggered!"
        assert envelope["priority"] == "normal"
        assert set(envelope) == {
            "id",
            "receipt_id",
            "topic",
            "title",
            "message",
            "priority",
            "tags",
            "click_url",
            "actions",
            "category",
            "timestamp",
        }
    assert third["message"] == "Hello from my Pi!"
    assert third["id"] == response.json()["id"]
    assert third["receipt_id"] == response.json()["receipt_id"]

    stored = await stored_messages(server.config)
    assert [(m.id, m.message, m.source) for m in stored] == [
        (first["id"], "Sensor triggered!", "mqtt"),
        (second["id"], "Sensor triggered!", "mqtt"),
        (third["id"], "Hello from my Pi!", "http"),
    ]


async def test_json_payload_fields_are_taken(server: Server, admin: Admin, make_client) -> None:
    await admin.create_topic("door")
    hub = await make_client()
    await hub.subscribe("pushgate/door/message")
    device = await make_client()
    payload = {"title": "Front door", "message": "Opened", "priority": "high", "tags": "door,alarm"}
    await device.publish("pushgate/door/push", json.dumps(payload), qos=1)
    envelope = json.loads((await hub.receive()).payload)
    assert (envelope["title"], envelope["message"], envelope["priority"], envelope["tags"]) == (
        "Front door",
        "Opened",
        "high",
        ["door", "alarm"],
    )


async def test_refused_push_is_answered_on_the_error_topic(server: Server, admin: Admin, make_client) -> None:
    await admin.create_topic("door")
    hub = await make_client()
    await hub.subscribe("pushgate/door/error")
    device = await make_client()
    await device.publish("pushgate/door/push", json.dumps({"message": "x", "priority": "loud"}), qos=1)
    error = json.loads((await hub.receive()).payload)
    assert error["status"] == 400
    assert error["field"] == "priority"
    assert "loud" in error["message"]
    await device.publish("pushgate/door/push", b"{not json", qos=1)
    error = json.loads((await hub.receive()).payload)
    assert (error["status"], error["field"]) == (400, "body")
    # nested past json's recursion limit: still the client's malformed body, PUBACKed, not a server failure
    await device.publish("pushgate/door/push", b'{"a":' * 3000, qos=1)
    error = json.loads((await hub.receive()).payload)
    assert (error["status"], error["field"]) == (400, "body")
    assert await stored_messages(server.config) == []


# The messages whose broadcast is still pending (``Receipt.broadcast_pending``).
_FLAGGED = "SELECT message_id FROM receipts WHERE broadcast_pending"


async def test_message_pushed_while_no_hub_listens_is_delivered_when_one_subscribes(
    server: Server, admin: Admin, make_client, http: httpx.AsyncClient
) -> None:
    """The push's pending broadcast becomes a ``waiting`` delivery row, which the subscriber wakes."""
    await admin.create_topic("garage")
    response = await http.post("/api/push/garage", content="Door left open")
    assert response.json()["subscribers"] == 0
    pushed = response.json()["id"]
    deliveries = "SELECT message_id, channel, state, attempts FROM deliveries"

    async def waiting() -> list[tuple[Any, ...]]:
        return await rows(server.config, deliveries)

    assert await until(waiting, "the broadcast to wait in a row") == [(pushed, "mqtt", "waiting", 1)]
    assert await rows(server.config, _FLAGGED) == []
    hub = await make_client()
    await hub.subscribe("pushgate/garage/message")
    envelope = json.loads((await hub.receive()).payload)
    assert envelope["id"] == pushed
    assert envelope["message"] == "Door left open"

    async def sent() -> bool:
        return await rows(server.config, deliveries) == [(pushed, "mqtt", "sent", 2)]

    await until(sent, "the row's second attempt recorded as sent")


async def test_broadcasts_pending_when_the_gateway_stopped_go_out_after_the_restart(
    config: Config, admin: Admin
) -> None:
    """A push is committed with its receipt flagged while its MQTT broadcast is pending
    (``Receipt.broadcast_pending``), cleared only with the broadcast's outcome: what the gateway stopped
    before sending is read back and sent after the restart, with no delivery row left for what went out.
    Read back together, the messages are published together, each with its own topic's outcome:
    "attic", which nobody reads, waits."""
    await admin.create_topic("garage")
    await admin.create_topic("attic")
    async with Gateway.running(config) as gw:
        gw.attach_mqtt(PushgateBroker(gw, config.mqtt))  # real broker, not started: nothing is sent
        pushed = {
            (await gw.publish(PushRequest(topic=topic, message=f"door {i}", source="test"))).id: topic
            for i, topic in enumerate(["garage", "attic", "garage"])
        }
    assert sorted(await rows(config, _FLAGGED)) == sorted((message_id,) for message_id in pushed)
    garage = sorted(message_id for message_id, topic in pushed.items() if topic == "garage")

    async with served(config) as server:
        hub = MqttClient(server.mqtt_port)
        try:
            assert not (await hub.connect()).is_failure
            await hub.subscribe("pushgate/garage/message")
            received = [json.loads((await hub.receive()).payload)["id"] for _ in garage]
        finally:
            hub.close()
        assert sorted(received) == garage

        async def credited() -> bool:
            receipts = await rows(config, "SELECT message_id, status, delivered_count FROM receipts")
            return sorted(receipts) == sorted(
                (message_id, "delivered", 1) if topic == "garage" else (message_id, "queued", 0)
                for message_id, topic in pushed.items()
            )

        await until(credited, "each garage receipt credited once, the attic one not")
        assert await rows(config, _FLAGGED) == []
        (attic,) = [message_id for message_id, topic in pushed.items() if topic == "attic"]

        async def attic_waits() -> bool:  # the hub's SUBSCRIBE may retry it meanwhile: pending, then waiting
            waiting = await rows(config, "SELECT message_id FROM deliveries WHERE state = 'waiting'")
            return waiting == [(attic,)]

        await until(attic_waits, "the attic message waiting in a delivery row")


async def test_a_burst_is_delivered_and_every_receipt_credited_once(
    server: Server, admin: Admin, make_client, http: httpx.AsyncClient
) -> None:
    """Pushes that arrive together are committed and recorded in shared transactions (one statement for
    many rows); each message still reaches the hub once, and each receipt says delivered to one target,
    also to a client listening for receipt updates."""
    await admin.create_topic("burst")
    key = await admin.create_key("burst", label="sensor")
    hub: MqttClient = await make_client()
    assert await hub.subscribe("pushgate/burst/message") == 1
    watcher: MqttClient = await make_client(password=key.secret)
    assert await watcher.subscribe("pushgate/burst/receipt") == 1
    devices = [await make_client(password=key.secret) for _ in range(4)]

    count = 200
    await asyncio.gather(
        *(devices[n % 4].publish("pushgate/burst/push", f"reading {n}", qos=1) for n in range(count))
    )
    envelopes = [json.loads((await hub.receive()).payload) for _ in range(count)]
    assert sorted(e["message"] for e in envelopes) == sorted(f"reading {n}" for n in range(count))
    assert len({e["id"] for e in envelopes}) == count

    delivered: dict[str, int] = {}
    while len(delivered) < count:
        update = json.loads((await watcher.receive()).payload)
        assert update["status"] == "delivered", update
        delivered[update["message_id"]] = update["delivered_count"]
    assert delivered == {e["id"]: 1 for e in envelopes}
    for envelope in envelopes[:: count // 10]:
        response = await http.get(f"/api/receipts/{envelope['receipt_id']}", headers=bearer(key.secret))
        assert (response.json()["status"], response.json()["delivered_count"]) == ("delivered", 1)


async def test_delivered_count_counts_each_session_once(
    server: Server, admin: Admin, make_client, http: httpx.AsyncClient
) -> None:
    """One hub holding two filters that both match, and a second hub: two sessions reached, each once
    counted, although the first gets the message once per filter (MQTT 3.1.1 allows that)."""
    await admin.create_topic("count")
    key = await admin.create_key("count", label="reader")
    first: MqttClient = await make_client()
    assert await first.subscribe("pushgate/count/message") == 1
    assert await first.subscribe("pushgate/count/#") == 1
    second: MqttClient = await make_client()
    assert await second.subscribe("pushgate/+/message") == 1
    pushed = (await http.post("/api/push/count", content="two hubs")).json()
    for hub in (first, second):
        assert json.loads((await hub.receive()).payload)["id"] == pushed["id"]

    async def receipt() -> dict[str, Any] | None:
        answer = (await http.get(f"/api/receipts/{pushed['receipt_id']}", headers=bearer(key.secret))).json()
        return answer if answer["status"] == "delivered" else None

    assert (await until(receipt, "the receipt to be delivered"))["delivered_count"] == 2
