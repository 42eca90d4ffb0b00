"""Home Assistant MQTT discovery (issue 7, acceptance 3), against the real gateway.

A paho-mqtt client plays Home Assistant: it connects with a user token and subscribes to
``homeassistant/#``, as Home Assistant's MQTT integration does. The configs it receives are checked against
the keys and types of Home Assistant's own discovery schemas (``mqtt/event.py`` ``DISCOVERY_SCHEMA``,
``mqtt/device_trigger.py`` ``TRIGGER_DISCOVERY_SCHEMA``, ``mqtt/schemas.py`` device info), restated below.

"Nothing arrived" is shown without sleeping: the client publishes a marker on a home topic it reads (QoS 1,
after its PUBACK) or waits for a later message that must come first, as ``test_mqtt_acl.py`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from gateway.admin import Admin
from gateway.config import Config, HomeAssistantConfig
from gateway.errors import ConfigError
from gateway.homeassistant import HomeAssistant
from gateway.serve import Endpoints, serve
from tests.conftest import TIMEOUT, MqttClient, Server, bearer, user

APPROVE_REJECT = {
    "title": "Garage door open",
    "message": "Close it?",
    "actions": [
        {"id": "approve", "label": "Close", "type": "button"},
        {"id": "reject", "label": "Leave open", "type": "button"},
    ],
}
SNOOZE = {
    "message": "Still open",
    "actions": [{"id": "snooze", "label": "Remind me later", "type": "button"}],
}
MARKER = "home/test-marker"

# Home Assistant's discovery topic, homeassistant/components/mqtt/discovery.py (TOPIC_MATCHER).
DISCOVERY_TOPIC = re.compile(
    r"homeassistant/(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
DEVICE_KEYS = {"identifiers", "connections", "manufacturer", "model", "name", "sw_version", "hw_version"}
EVENT_KEYS = {"name", "unique_id", "state_topic", "event_types", "qos", "icon", "device", "origin"}
TRIGGER_KEYS = {"automation_type", "topic", "type", "subtype", "payload", "value_template", "qos", "device"}


@pytest.fixture
def discovery(request: pytest.FixtureRequest) -> bool:
    return getattr(request, "param", True)


@pytest.fixture
def config(config: Config, discovery: bool) -> Config:
    return dataclasses.replace(config, homeassistant=HomeAssistantConfig(discovery=discovery))


def check_device(device: Any) -> None:
    """``MQTT_ENTITY_DEVICE_INFO_SCHEMA``: strings only, and at least one identifier or connection."""
    assert isinstance(device, dict) and set(device) <= DEVICE_KEYS, device
    assert device["identifiers"] and all(isinstance(i, str) for i in device["identifiers"])
    assert all(isinstance(device[k], str) for k in device if k not in ("identifiers", "connections"))


def check_origin(origin: Any) -> None:
    """``MQTT_ORIGIN_INFO_SCHEMA``: a required name."""
    assert (
        isinstance(origin, dict) and isinstance(origin["name"], str) and set(origin) <= {"name", "sw_version"}
    )


def check_event_config(config: dict[str, Any]) -> None:
    """The event platform's ``DISCOVERY_SCHEMA``: ``state_topic`` and ``event_types`` required."""
    assert set(config) <= EVENT_KEYS | {"origin"}, set(config) - EVENT_KEYS
    assert isinstance(config["state_topic"], str) and config["state_topic"]
    assert isinstance(config["event_types"], list) and all(isinstance(t, str) for t in config["event_types"])
    assert isinstance(config["unique_id"], str) and isinstance(config["name"], str)
    assert config["qos"] in (0, 1, 2)
    assert re.fullmatch(r"[a-z]+:[a-z0-9-]+", config["icon"])  # cv.icon
    check_device(config["device"])
    check_origin(config["origin"])


def check_trigger_config(config: dict[str, Any]) -> None:
    """``TRIGGER_DISCOVERY_SCHEMA``: automation_type, device, subtype, topic and type required."""
    assert set(config) <= TRIGGER_KEYS | {"origin"}, set(config) - TRIGGER_KEYS
    assert config["automation_type"] == "trigger"
    for key in ("topic", "type", "subtype", "payload", "value_template"):
        assert isinstance(config[key], str) and config[key], key
    assert config["qos"] in (0, 1, 2)
    check_device(config["device"])
    check_origin(config["origin"])


def fires(trigger: dict[str, Any], event: dict[str, Any]) -> bool:
    """What Home Assistant's MQTT trigger does with this config: render ``value_template`` (the only
    template pushgate sends) on the JSON payload and compare it with ``payload``."""
    assert trigger["value_template"] == "{{ value_json.event_type }}"
    return bool(event["event_type"] == trigger["payload"])


class Hub:
    """Home Assistant's view: the discovery configs it holds, by config topic (an empty payload removes)."""

    def __init__(self, client: MqttClient) -> None:
        self.client = client
        self.configs: dict[str, dict[str, Any]] = {}
        self.retained: set[str] = set()
        self.seen: list[mqtt.MQTTMessage] = []

    async def next(self) -> mqtt.MQTTMessage:
        message = await self.client.receive()
        self.seen.append(message)
        if message.topic.startswith("homeassistant/"):
            assert DISCOVERY_TOPIC.fullmatch(message.topic), message.topic
            if message.payload:
                self.configs[message.topic] = json.loads(message.payload)
                if message.retain:
                    self.retained.add(message.topic)
            else:
                self.configs.pop(message.topic, None)
        return message

    async def until(self, check: Callable[[Hub], Any], what: str) -> None:
        while not check(self):
            try:
                await self.next()
            except Exception as exc:
                raise AssertionError(
                    f"timed out waiting for {what}; configs: {sorted(self.configs)}"
                ) from exc

    async def drain_to_marker(self) -> list[mqtt.MQTTMessage]:
        """Everything that arrives before a marker this client publishes now (and the marker's arrival)."""
        start = len(self.seen)
        await self.client.publish(MARKER, b"marker", qos=1)
        while (await self.next()).topic != MARKER:
            pass
        return self.seen[start:-1]


async def home_assistant(make_client: Any, token_headers: dict[str, str]) -> Hub:
    token = token_headers["Authorization"].removeprefix("Bearer ")
    client = await make_client(username="homeassistant", password=token)
    assert await client.subscribe("homeassistant/#") == 1
    assert await client.subscribe(MARKER) == 1
    return Hub(client)


def event_topic(name: str) -> str:
    return f"homeassistant/event/pushgate_{name}/action/config"


def trigger_topic(name: str, action_id: str) -> str:
    return f"homeassistant/device_automation/pushgate_{name}/{action_id}/config"


async def create_topic(
    http: httpx.AsyncClient, owner: dict[str, str], name: str, private: bool
) -> tuple[str, str]:
    """Create a topic through the API and a key for it; returns (topic id, key)."""
    response = await http.post("/api/topics", json={"name": name, "is_private": private}, headers=owner)
    assert response.status_code == 201, response.text
    topic_id = response.json()["id"]
    key = await http.post(f"/api/topics/{topic_id}/keys", json={"label": "esp32"}, headers=owner)
    assert key.status_code == 201, key.text
    return topic_id, key.json()["key"]


async def test_a_new_topic_is_announced_with_valid_retained_configs_and_fires_events(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client
) -> None:
    alice = await user(admin, "alice")
    hub = await home_assistant(make_client, alice)
    topic_id, key = await create_topic(http, alice, "garage", private=True)

    # a new topic: the event entity, with no action ids yet
    await hub.until(lambda h: event_topic("garage") in h.configs, "the event entity of the new topic")
    entity = hub.configs[event_topic("garage")]
    check_event_config(entity)
    assert entity["event_types"] == [] and entity["state_topic"] == "pushgate/garage/event"
    assert entity["device"]["name"] == "pushgate garage" and entity["device"]["manufacturer"] == "pushgate"
    assert entity["unique_id"] == f"pushgate_{topic_id}_action"

    # a message offering actions: event_types and one device trigger per id, on the same device
    pushed = await http.post("/api/push/garage", json=APPROVE_REJECT, headers=bearer(key))
    assert pushed.status_code == 200, pushed.text
    await hub.until(
        lambda h: (
            h.configs[event_topic("garage")]["event_types"] == ["approve", "reject"]
            and trigger_topic("garage", "reject") in h.configs
        ),
        "configs naming approve and reject",
    )
    entity = hub.configs[event_topic("garage")]
    check_event_config(entity)
    triggers = {a: hub.configs[trigger_topic("garage", a)] for a in ("approve", "reject")}
    for action_id, trigger in triggers.items():
        check_trigger_config(trigger)
        assert (trigger["type"], trigger["subtype"]) == ("action", action_id)
        assert trigger["topic"] == entity["state_topic"] and trigger["device"] == entity["device"]

    # a second Home Assistant connecting later gets every config retained
    late = await home_assistant(make_client, alice)
    await late.drain_to_marker()
    assert late.configs == hub.configs and late.retained == set(hub.configs)

    # "approve" tapped: the event reaches the entity's state topic, not retained, and fires its trigger
    assert await hub.client.subscribe(entity["state_topic"]) == 1
    tapped = await http.post(
        "/api/action", json={"message_id": pushed.json()["id"], "action_id": "approve"}, headers=bearer(key)
    )
    assert tapped.status_code == 200, tapped.text
    await hub.until(lambda h: h.seen[-1].topic == "pushgate/garage/event", "the event on the state topic")
    message = hub.seen[-1]
    assert message.retain is False
    event = json.loads(message.payload)
    assert event == {"event_type": "approve", "message_id": pushed.json()["id"], "reply_text": None}
    assert event["event_type"] in entity["event_types"]
    assert [a for a, t in triggers.items() if fires(t, event)] == ["approve"]

    # a new action id updates event_types and adds its trigger
    assert (await http.post("/api/push/garage", json=SNOOZE, headers=bearer(key))).status_code == 200
    await hub.until(
        lambda h: (
            h.configs[event_topic("garage")]["event_types"] == ["approve", "reject", "snooze"]
            and trigger_topic("garage", "snooze") in h.configs
        ),
        "configs naming snooze",
    )
    check_trigger_config(hub.configs[trigger_topic("garage", "snooze")])

    # deleting the topic clears every config (Home Assistant removes the device), also for new subscribers
    announced = set(hub.configs)
    assert len(announced) == 4
    assert (await http.delete(f"/api/topics/{topic_id}", headers=alice)).status_code == 200
    await hub.until(lambda h: not h.configs, "empty payloads clearing the configs")
    assert {m.topic for m in hub.seen if not m.payload} == announced
    after = await home_assistant(make_client, alice)
    assert await after.drain_to_marker() == []


async def test_private_topics_reach_only_those_who_may_read_them(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client
) -> None:
    alice, bob = await user(admin, "alice"), await user(admin, "bob")
    alice_hub = await home_assistant(make_client, alice)
    bob_hub = await home_assistant(make_client, bob)
    assert await alice_hub.client.subscribe("pushgate/+/event") == 1
    assert await bob_hub.client.subscribe("pushgate/+/event") == 1

    _secret_id, secret_key = await create_topic(http, alice, "vault", private=True)
    await alice_hub.until(lambda h: event_topic("vault") in h.configs, "alice's private topic")
    _public_id, public_key = await create_topic(http, bob, "garden", private=False)
    # Bob's first config is the public topic's: the private one never reached him
    await bob_hub.until(lambda h: h.seen, "a config")
    assert bob_hub.seen[0].topic == event_topic("garden")
    await alice_hub.until(lambda h: event_topic("garden") in h.configs, "the public topic, for alice too")

    # a key of another topic cannot read the private state topic at all
    intruder = await make_client(password=public_key)
    assert await intruder.subscribe("pushgate/vault/event") == 128
    assert await intruder.subscribe("pushgate/+/event") == 128

    # an event on the private topic reaches its owner only; Bob's next event is the public topic's
    vault = await http.post("/api/push/vault", json=APPROVE_REJECT, headers=bearer(secret_key))
    garden = await http.post("/api/push/garden", json=APPROVE_REJECT, headers=bearer(public_key))
    for pushed, key in ((vault, secret_key), (garden, public_key)):
        body = {"message_id": pushed.json()["id"], "action_id": "approve"}
        assert (await http.post("/api/action", json=body, headers=bearer(key))).status_code == 200
    await alice_hub.until(
        lambda h: {m.topic for m in h.seen} >= {"pushgate/vault/event", "pushgate/garden/event"},
        "both events",
    )
    await bob_hub.until(lambda h: h.seen[-1].topic == "pushgate/garden/event", "the public event")
    assert not any("vault" in m.topic for m in bob_hub.seen)

    # clients cannot forge the gateway's configs or events, not even the owner
    forged = json.dumps({"state_topic": "home/elsewhere", "event_types": ["approve"]})
    alice_hub.client.client.publish(event_topic("vault"), forged, qos=1, retain=True)
    await alice_hub.client.publish("pushgate/vault/event", json.dumps({"event_type": "approve"}), qos=1)
    assert await alice_hub.drain_to_marker() == []
    late = await home_assistant(make_client, alice)
    await late.drain_to_marker()
    assert late.configs[event_topic("vault")]["state_topic"] == "pushgate/vault/event"


@pytest.mark.parametrize("discovery", [False], indirect=True)
async def test_with_discovery_off_nothing_is_published_under_homeassistant(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client
) -> None:
    alice = await user(admin, "alice")
    hub = await home_assistant(make_client, alice)
    assert await hub.client.subscribe("pushgate/+/action") == 1
    assert await hub.client.subscribe("pushgate/+/event") == 1
    _topic_id, key = await create_topic(http, alice, "garage", private=False)
    pushed = await http.post("/api/push/garage", json=APPROVE_REJECT, headers=bearer(key))
    body = {"message_id": pushed.json()["id"], "action_id": "approve"}
    assert (await http.post("/api/action", json=body, headers=bearer(key))).status_code == 200
    await hub.until(lambda h: h.seen and h.seen[-1].topic == "pushgate/garage/action", "the action event")
    assert [m.topic for m in hub.seen] == ["pushgate/garage/action"]  # no config, no …/event before it
    assert await hub.drain_to_marker() == []
    # and the discovery topics are an ordinary part of the home broker again
    await hub.client.publish(event_topic("garage"), b"{}", qos=1)
    await hub.until(lambda h: h.seen[-1].topic == event_topic("garage"), "the client's own message")


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Endpoints]:
    """The gateway started and stopped inside a test (the ``server`` fixture cannot restart)."""
    stop = asyncio.Event()
    ready: asyncio.Future[Endpoints] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, shutdown_trigger=stop.wait, on_ready=ready.set_result))
    done, _ = await asyncio.wait([task, ready], timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        yield ready.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


async def test_at_start_every_topic_is_announced_with_the_ids_of_its_stored_messages(
    config: Config, admin: Admin, mqtt_clients: list[MqttClient]
) -> None:
    token = bearer((await admin.create_user("alice")).secret)
    await admin.create_topic("garage", owner="alice", private=True)
    await admin.create_topic("quiet")
    key = (await admin.create_key("garage")).secret
    async with running(config) as endpoints, httpx.AsyncClient(base_url=endpoints.http) as http:
        assert (
            await http.post("/api/push/garage", json=APPROVE_REJECT, headers=bearer(key))
        ).status_code == 200

    async with running(config) as endpoints:  # a new broker: nothing retained but what the start published
        assert endpoints.mqtt is not None

        async def make(*, username: str, password: str) -> MqttClient:
            client = MqttClient(int(endpoints.mqtt.rsplit(":", 1)[1]), username=username, password=password)
            mqtt_clients.append(client)
            assert not (await client.connect()).is_failure
            return client

        hub = await home_assistant(make, token)
        await hub.until(
            lambda h: (
                {event_topic("garage"), event_topic("quiet"), trigger_topic("garage", "reject")}
                <= set(h.configs)
            ),
            "the configs of both topics",
        )
        assert hub.configs[event_topic("garage")]["event_types"] == ["approve", "reject"]
        assert hub.configs[event_topic("quiet")]["event_types"] == []


async def test_action_ids_that_are_not_mqtt_levels_get_valid_config_topics(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client
) -> None:
    alice = await user(admin, "alice")
    hub = await home_assistant(make_client, alice)
    _topic_id, key = await create_topic(http, alice, "lights", private=True)
    odd = ["turn on/off", "a+b#c", "ok"]
    body = {"message": "Lights?", "actions": [{"id": a, "label": a, "type": "button"} for a in odd]}
    pushed = await http.post("/api/push/lights", json=body, headers=bearer(key))
    assert pushed.status_code == 200, pushed.text
    # every config topic Hub sees is checked against Home Assistant's discovery topic pattern
    await hub.until(
        lambda h: sum("device_automation/pushgate_lights/" in t for t in h.configs) == 3, "three triggers"
    )
    triggers = [c for t, c in hub.configs.items() if "device_automation/pushgate_lights/" in t]
    assert sorted(t["subtype"] for t in triggers) == sorted(odd)
    assert hub.configs[event_topic("lights")]["event_types"] == sorted(odd)
    assert trigger_topic("lights", "ok") in hub.configs

    assert await hub.client.subscribe("pushgate/lights/event") == 1
    tapped = {"message_id": pushed.json()["id"], "action_id": "turn on/off", "reply_text": "now"}
    assert (await http.post("/api/action", json=tapped, headers=bearer(key))).status_code == 200
    await hub.until(lambda h: h.seen[-1].topic == "pushgate/lights/event", "the event")
    event = json.loads(hub.seen[-1].payload)
    assert event == {"event_type": "turn on/off", "message_id": pushed.json()["id"], "reply_text": "now"}
    assert [t["subtype"] for t in triggers if fires(t, event)] == ["turn on/off"]


@pytest.mark.parametrize("prefix", ["", "home/assistant", "ha/#", "$SYS", "pushgate"])
def test_a_discovery_prefix_that_cannot_work_is_refused_at_start(prefix: str) -> None:
    with pytest.raises(ConfigError, match="discovery_prefix"):
        HomeAssistant(None, HomeAssistantConfig(discovery_prefix=prefix), "pushgate")  # type: ignore[arg-type]
