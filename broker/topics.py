"""Pushgate's MQTT topic layout, ``<prefix>/<topic>/<leaf>``, parsed in one place."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEVICE_LEAVES", "GATEWAY_LEAVES", "PushgateTopic", "parse_filter", "parse_topic"]

DEVICE_LEAVES = frozenset({"push", "act"})  # devices publish these
GATEWAY_LEAVES = frozenset({"message", "action", "receipt", "error"})  # only the gateway publishes these


@dataclass(frozen=True, slots=True)
class PushgateTopic:
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
