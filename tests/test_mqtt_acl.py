"""MQTT authentication and the topic ACL: wrong keys, keys of other topics, anonymous clients.

"Nothing reached B" is shown without sleeping: a refused publish is sent at QoS 1 and the broker's PUBACK
comes only after it decided; then a permitted marker message follows, and B's hub must receive exactly
that marker first, so the refused one was never delivered.
"""

from __future__ import annotations

import asyncio
import json

import httpx

from gateway.admin import Admin
from tests.conftest import MqttClient, Server, stored_messages


async def test_wrong_key_gets_connack_not_authorised(server: Server, admin: Admin, mqtt_clients) -> None:
    await admin.create_topic("a")
    for username, password in [
        ("device", "pk_000000000000_not-a-real-key"),
        ("device", "not-even-shaped-like-a-key"),
        ("pk_000000000000_not-a-real-key", ""),
    ]:
        client = MqttClient(server.mqtt_port, username=username, password=password)
        mqtt_clients.append(client)
        rc = await client.connect()
        assert rc.is_failure
        assert rc.getName() == "Not authorized"


async def test_key_as_username_with_empty_password_is_accepted(
    server: Server, admin: Admin, make_client
) -> None:
    await admin.create_topic("a", private=True)
    key = await admin.create_key("a")
    client = await make_client(username=key.secret)
    assert await client.subscribe("pushgate/a/message") == 1


async def test_revoked_key_is_refused_on_new_connections(server: Server, admin: Admin, mqtt_clients) -> None:
    await admin.create_topic("a")
    key = await admin.create_key("a")
    await admin.revoke_key(key.id)
    client = MqttClient(server.mqtt_port, username="dev", password=key.secret)
    mqtt_clients.append(client)
    assert (await client.connect()).is_failure


async def test_key_of_topic_a_cannot_publish_to_or_read_topic_b(
    server: Server, admin: Admin, make_client, http: httpx.AsyncClient
) -> None:
    await admin.create_topic("a", private=True)
    await admin.create_topic("b", private=True)
    key_a = await admin.create_key("a")
    key_b = await admin.create_key("b")

    hub_b = await make_client(password=key_b.secret)
    assert await hub_b.subscribe("pushgate/b/+") == 1
    device_a = await make_client(password=key_a.secret)

    # reading B: every filter that would reach B is refused
    for topic_filter in ("pushgate/b/message", "pushgate/b/#", "pushgate/+/message", "pushgate/#", "#"):
        assert await device_a.subscribe(topic_filter) == 128, topic_filter
    # publishing to B: dropped (QoS 1 still acknowledged, as MQTT 3.1.1 brokers do)
    await device_a.publish("pushgate/b/push", "forged by A", qos=1)
    await device_a.publish("pushgate/b/message", json.dumps({"message": "forged envelope"}), qos=1)
    # gateway-only leaves cannot be published on one's own topic either
    await device_a.publish("pushgate/a/message", "forged on own topic", qos=1)

    marker = await http.post("/api/push/b", content="marker", headers={"x-api-key": key_b.secret})
    assert marker.status_code == 200
    received = await hub_b.receive()
    assert received.topic == "pushgate/b/message"
    assert json.loads(received.payload)["id"] == marker.json()["id"]
    assert hub_b.messages.empty()
    assert [m.message for m in await stored_messages(server.config)] == ["marker"]

    # and A's own topic works for A
    assert await device_a.subscribe("pushgate/a/message") == 1
    await device_a.publish("pushgate/a/push", "mine", qos=1)
    assert json.loads((await device_a.receive()).payload)["message"] == "mine"


async def test_anonymous_clients_reach_public_topics_only(
    server: Server, admin: Admin, make_client, http: httpx.AsyncClient
) -> None:
    await admin.create_topic("public")
    await admin.create_topic("private", private=True)
    key = await admin.create_key("private")

    anon = await make_client()
    assert await anon.subscribe("pushgate/private/message") == 128
    assert await anon.subscribe("home/livingroom/temp") == 128  # the home space needs a user token
    # a wildcard over all topics is allowed, but delivers public topics only
    assert await anon.subscribe("pushgate/+/message") == 1

    hub_private = await make_client(password=key.secret)
    assert await hub_private.subscribe("pushgate/private/message") == 1
    await anon.publish("pushgate/private/push", "anonymous into private", qos=1)

    private = await http.post("/api/push/private", content="secret", headers={"x-api-key": key.secret})
    public = await http.post("/api/push/public", content="hello everyone")
    assert (private.status_code, public.status_code) == (200, 200)

    got = json.loads((await anon.receive()).payload)
    assert got["id"] == public.json()["id"]  # the private message was never delivered to anon
    assert json.loads((await hub_private.receive()).payload)["id"] == private.json()["id"]
    assert hub_private.messages.empty()

    await anon.publish("pushgate/public/push", "anonymous into public", qos=1)
    assert json.loads((await anon.receive()).payload)["message"] == "anonymous into public"
    assert sorted(m.message for m in await stored_messages(server.config)) == [
        "anonymous into public",
        "hello everyone",
        "secret",
    ]


async def test_user_token_grants_its_own_topics_and_the_home_space(
    server: Server, admin: Admin, make_client, http: httpx.AsyncClient
) -> None:
    user = await admin.create_user("alice")
    await admin.create_topic("alice-alarm", private=True, owner="alice")
    await admin.create_topic("bobs", private=True)
    bob_key = await admin.create_key("bobs")

    hub = await make_client(username="home-assistant", password=user.secret)
    assert await hub.subscribe("pushgate/+/message") == 1
    assert await hub.subscribe("home/+/temp") == 1
    assert await hub.subscribe("pushgate/bobs/message") == 128

    bobs = await http.post("/api/push/bobs", content="bob's", headers={"x-api-key": bob_key.secret})
    alarm = await http.post(
        "/api/push/alice-alarm", content="alarm", headers={"Authorization": f"Bearer {user.secret}"}
    )
    assert (bobs.status_code, alarm.status_code) == (200, 200)
    assert json.loads((await hub.receive()).payload)["id"] == alarm.json()["id"]

    await hub.publish("home/kitchen/temp", "21.5", qos=1)
    received = await hub.receive()
    assert (received.topic, received.payload) == ("home/kitchen/temp", b"21.5")


async def test_revoked_key_disconnects_its_connected_clients(
    server: Server, admin: Admin, make_client, mqtt_clients, config
) -> None:
    """Revoked from another process (as the CLI does): the broker's key audit disconnects the client
    within ``key_audit_interval``, and it cannot reconnect."""
    await admin.create_topic("a", private=True)
    key = await admin.create_key("a")
    device: MqttClient = await make_client(password=key.secret)
    disconnected = asyncio.Event()
    loop = asyncio.get_running_loop()
    device.client.on_disconnect = lambda *_: loop.call_soon_threadsafe(disconnected.set)
    device.client.reconnect_delay_set(60, 60)  # no automatic reconnect while the test looks

    await admin.revoke_key(key.id)
    await asyncio.wait_for(disconnected.wait(), config.mqtt.key_audit_interval + 5)
    again = MqttClient(server.mqtt_port, password=key.secret)
    mqtt_clients.append(again)
    assert (await again.connect()).is_failure
