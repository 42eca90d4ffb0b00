"""The home broker's ACL: rule parsing and matching, then the rules enforced by the running broker."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from broker.home_acl import HomeAcl
from gateway.access import ANONYMOUS, Principal
from gateway.admin import Admin
from gateway.config import Config
from gateway.errors import ConfigError
from tests.conftest import MqttClient, Server

ALICE = Principal("user", user_id="u1", label="alice")
GUEST = Principal("user", user_id="u2", label="guest")
KEY = Principal("key", topic_id="t", key_id="k")
RULES = [
    "deny user:guest write home/#",
    "deny user:guest read home/safe/#",
    "allow user readwrite #",
    "allow anonymous read public/#",
]


def test_first_matching_rule_decides_and_no_rule_denies() -> None:
    acl = HomeAcl(RULES)
    assert acl.allows(ALICE, "write", "home/door") and acl.allows(ALICE, "read", "$SYS/broker/uptime")
    assert not acl.allows(GUEST, "write", "home/door")
    assert acl.allows(GUEST, "read", "home/door")
    assert not acl.allows(GUEST, "read", "home/safe/code")
    assert acl.allows(GUEST, "write", "garden/sprinkler")
    assert acl.allows(ANONYMOUS, "read", "public/weather") and not acl.allows(ANONYMOUS, "write", "public/x")
    assert not acl.allows(ANONYMOUS, "read", "home/door")
    assert not acl.allows(KEY, "read", "home/door")  # no rule names keys


def test_subscriptions() -> None:
    acl = HomeAcl(RULES)
    assert not acl.allows_subscription(GUEST, "home/safe/#")  # covered by a deny
    assert not acl.allows_subscription(GUEST, "home/safe/code")
    assert acl.allows_subscription(GUEST, "home/#")  # broader than the deny: granted, filtered per message
    assert acl.allows_subscription(ANONYMOUS, "public/+")
    assert acl.allows_subscription(ANONYMOUS, "#")  # reaches public/#: granted, the rest withheld per message
    assert not acl.allows_subscription(ANONYMOUS, "home/#")  # no allow rule reaches it


def test_broader_filter_overlapping_an_allow_is_granted() -> None:
    acl = HomeAcl(["allow anonymous read public/#"])
    assert acl.allows_subscription(ANONYMOUS, "+/weather")  # overlaps public/weather; others withheld
    assert not acl.allows_subscription(ANONYMOUS, "private/+")


@pytest.mark.parametrize(
    "rule",
    [
        "allow user readwrite",
        "permit user read #",
        "allow root read #",
        "allow user exec #",
        "allow user read a/#/b",
    ],
)
def test_bad_rules_are_config_errors(rule: str) -> None:
    with pytest.raises(ConfigError, match="home_acl"):
        HomeAcl([rule])


@pytest.fixture
def config(config: Config, tmp_path: Path) -> Config:
    return dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, home_acl=tuple(RULES)))


async def test_rules_enforced_by_the_broker(server: Server, admin: Admin, make_client, mqtt_clients) -> None:
    alice = (await admin.create_user("alice")).secret
    guest = (await admin.create_user("guest")).secret
    hub: MqttClient = await make_client(username="alice", password=alice)
    assert await hub.subscribe("home/#") == 1
    visitor: MqttClient = await make_client(username="guest", password=guest)
    assert await visitor.subscribe("home/safe/#") == 128  # deny rule: SUBACK 0x80
    assert await visitor.subscribe("home/#") == 1

    await visitor.publish("home/door", "opened by guest", qos=1)  # denied: dropped
    await hub.publish("home/safe/code", "1234", qos=1)  # guest may not read this one
    await hub.publish("home/door", "closed by alice", qos=1)
    # alice's hub gets both of its own publishes and not the guest's, in order
    assert [(await hub.receive()).payload for _ in range(2)] == [b"1234", b"closed by alice"]
    assert (await visitor.receive()).payload == b"closed by alice"  # not the safe code, not its own
    assert visitor.messages.empty()

    anon: MqttClient = await make_client()
    assert await anon.subscribe("home/#") == 128
    assert await anon.subscribe("#") == 1  # reaches public/#; the rest is withheld per message
    await hub.publish("home/door", "private to the house", qos=1)
    await hub.publish("public/weather", "sunny", qos=1)
    received = await anon.receive()
    assert (received.topic, received.payload) == ("public/weather", b"sunny")
