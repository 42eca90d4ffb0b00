"""Pushgate's MQTT topic layout, ``<prefix>/<topic>/<leaf>``, parsed in one place."""

from __future__ import annotations

from typing import NamedTuple

from gateway.homeassistant import NODE_PREFIX, STATE_EVENT

__all__ = [
    "DEVICE_LEAVES",
    "DISCOVERY_NODE_PREFIX",
    "GATEWAY_LEAVES",
    "PushgateTopic",
    "parse_discovery",
    "parse_filter",
    "parse_topic",
]

DEVICE_LEAVES = frozenset({"push", "act"})  # devices publish these
# only the gateway publishes these (STATE_EVENT, "event": Home Assistant's state topic)
GATEWAY_LEAVES = frozenset({"message", "action", "receipt", "error", STATE_EVENT})
# <discovery prefix>/<component>/pushgate_<topic>/...: Home Assistant discovery topics the gateway owns
DISCOVERY_NODE_PREFIX = NODE_PREFIX


class PushgateTopic(NamedTuple):
    """A tuple, made for every publish into the prefix: a frozen dataclass took several times as long."""

    name: str  # the pushgate topic name, or "+"/"#" in a filter
    leaf: str  # the last level, or "+"/"#"/"" in a filter


def parse_topic(prefix: str, mqtt_topic: str) -> PushgateTopic | None:
    """``<prefix>/<name>/<leaf>`` exactly; ``None`` for any other topic (the home broker's space)."""
    parts = mqtt_topic.split("/")
    if len(parts) != 3 or parts[0] != prefix:
        return None
    return PushgateTopic(parts[1], parts[2])


def parse_filter(prefix: str, topic_filter: str) -> PushgateTopic | None | bool:
    """Classify a subscription filter.

    Returns a ``PushgateTopic`` for filters inside the prefix (name and leaf may be wildcards), ``None``
    for filters that cannot match the prefix, and ``True`` for filters that span both (``#``, ``+/#``…).
    """
    parts = topic_filter.split("/")
    head = parts[0]
    if head == "#":
        return True
    if head not in (prefix, "+"):
        return None
    rest = parts[1:]
    if not rest:
        return None if head == prefix else True
    if head == "+":
        return True
    name = rest[0]
    if name == "#":
        return PushgateTopic("#", "#")
    if len(rest) == 1:
        return PushgateTopic(name, "")  # "<prefix>/<name>" matches no pushgate topic, harmless
    leaf = rest[1]
    if len(rest) > 2 and leaf != "#":
        return PushgateTopic(name, "")  # deeper than the layout: matches nothing of ours
    return PushgateTopic(name, leaf)


def parse_discovery(discovery_prefix: str, mqtt_topic: str) -> str | None:
    """The pushgate topic name of a Home Assistant discovery topic the gateway announces
    (``<discovery_prefix>/<component>/pushgate_<topic>/<object>/config``, or any topic below such a node);
    ``None`` for every other topic."""
    parts = mqtt_topic.split("/")
    if len(parts) < 4 or parts[0] != discovery_prefix or not parts[2].startswith(DISCOVERY_NODE_PREFIX):
        return None
    return parts[2][len(DISCOVERY_NODE_PREFIX) :] or None
