"""Ordinary MQTT 3.1.1 behaviour that stock amqtt 0.12.1 gets right must hold unchanged on pushgate's broker
(issue 3, acceptance 6): each test runs on both, with no xfail."""

from __future__ import annotations

from tests.brokers import NEGATIVE_WAIT, BrokerUnderTest, paho, raw


async def test_wildcards(mqtt_broker: BrokerUnderTest, clients: list) -> None:
    alice = await paho(mqtt_broker, clients, mqtt_broker.alice)
    assert await alice.subscribe("home/+/temp") == 1
    assert await alice.subscribe("garden/#") == 1
    for topic in ("home/kitchen/temp", "home/kitchen/humidity", "garden", "garden/bed/1", "home/temp"):
        await alice.publish(topic, topic, qos=1)
    received = [(await alice.receive()).topic for _ in range(3)]
    assert received == ["home/kitchen/temp", "garden", "garden/bed/1"]
    await alice.publish("home/end", "end", qos=1)
    assert await alice.subscribe("home/end") == 1
    await alice.publish("home/end", "end", qos=1)
    assert (await alice.receive()).topic == "home/end"  # nothing else matched in between


async def test_unsubscribe(mqtt_broker: BrokerUnderTest, clients: list) -> None:
    alice = await paho(mqtt_broker, clients, mqtt_broker.alice)
    assert await alice.subscribe("home/a") == 1
    assert await alice.subscribe("home/b") == 1
    _, mid = alice.client.unsubscribe("home/a")
    await alice.publish("home/a", "after unsubscribe", qos=1)
    await alice.publish("home/b", "still subscribed", qos=1)
    assert (await alice.receive()).payload == b"still subscribed"


async def test_retained_set_replace_and_clear(mqtt_broker: BrokerUnderTest, clients: list) -> None:
    alice = await paho(mqtt_broker, clients, mqtt_broker.alice)
    for payload in (b"first", b"second"):
        info = alice.client.publish("home/state", payload, qos=1, retain=True)
        await _published(info)
    late = await paho(mqtt_broker, clients, mqtt_broker.alice)
    assert await late.subscribe("home/state") == 1
    message = await late.receive()
    assert (message.payload, message.retain) == (b"second", True)

    await _published(alice.client.publish("home/state", b"", qos=1, retain=True))  # clears it
    later = await paho(mqtt_broker, clients, mqtt_broker.alice)
    assert await later.subscribe("home/state") == 1
    await alice.publish("home/state", "live", qos=1)
    message = await later.receive()
    assert (message.payload, message.retain) == (b"live", False)  # no retained message came first


async def test_qos_levels(mqtt_broker: BrokerUnderTest, clients: list) -> None:
    """Each level end to end at a matching subscription (mixed levels are defect 4's test)."""
    sub = await paho(mqtt_broker, clients, mqtt_broker.alice)
    pub = await paho(mqtt_broker, clients, mqtt_broker.alice)
    for qos in (0, 1, 2):
        assert await sub.subscribe(f"home/qos/{qos}", qos=qos) == qos
        info = pub.client.publish(f"home/qos/{qos}", f"q{qos}", qos=qos)
        if qos:
            await _published(info)
        message = await sub.receive()
        assert (message.payload, message.qos) == (f"q{qos}".encode(), qos)


async def test_clean_disconnect_sends_no_will_and_abnormal_one_does(
    mqtt_broker: BrokerUnderTest, clients: list
) -> None:
    watcher = await paho(mqtt_broker, clients, mqtt_broker.alice)
    assert await watcher.subscribe("home/will/#") == 1
    polite = await paho(mqtt_broker, clients, mqtt_broker.alice, will=("home/will/polite", b"polite gone", 1))
    polite.close()
    clients.remove(polite)
    rude = await raw(mqtt_broker, clients)
    await rude.connect(
        "rude",
        username=mqtt_broker.alice[0],
        password=mqtt_broker.alice[1],
        will=("home/will/rude", b"rude gone", 1),
    )
    rude.close()  # socket closed without DISCONNECT
    message = await watcher.receive(NEGATIVE_WAIT)
    assert (message.topic, message.payload) == ("home/will/rude", b"rude gone")


async def test_persistent_session_queues_while_offline(mqtt_broker: BrokerUnderTest, clients: list) -> None:
    hub = await paho(mqtt_broker, clients, mqtt_broker.alice, client_id="persistent-hub", clean_session=False)
    assert await hub.subscribe("home/p", qos=1) == 1
    hub.close()
    clients.remove(hub)
    pub = await paho(mqtt_broker, clients, mqtt_broker.alice)
    await pub.publish("home/p", "while you were away", qos=1)
    hub = await paho(mqtt_broker, clients, mqtt_broker.alice, client_id="persistent-hub", clean_session=False)
    assert hub.session_present
    assert (await hub.receive()).payload == b"while you were away"


async def test_overlapping_subscriptions_deliver(mqtt_broker: BrokerUnderTest, clients: list) -> None:
    alice = await paho(mqtt_broker, clients, mqtt_broker.alice)
    assert await alice.subscribe("home/#") == 1
    assert await alice.subscribe("home/x") == 1
    await alice.publish("home/x", "overlap", qos=1)
    assert (await alice.receive()).payload == b"overlap"  # at least once; MQTT 3.1.1 allows one per filter


async def test_zero_length_client_id_with_clean_session(mqtt_broker: BrokerUnderTest, clients: list) -> None:
    client = await raw(mqtt_broker, clients)
    connack = await client.connect("", username=mqtt_broker.alice[0], password=mqtt_broker.alice[1])
    assert connack.body == b"\x00\x00"


async def _published(info: object) -> None:
    import asyncio

    await asyncio.to_thread(info.wait_for_publish, NEGATIVE_WAIT)  # type: ignore[attr-defined]
