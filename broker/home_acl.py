"""Access rules for the home broker: MQTT topics outside pushgate's prefix (Home Assistant, Tasmota, scripts).

Rules come from ``[mqtt] home_acl``, each ``allow|deny WHO ACCESS FILTER``; the first rule that applies
decides and no rule means deny, as in mosquitto's ACL files. WHO is ``anonymous``, ``user`` (any user
token), ``user:<name>``, ``key`` (any topic key) or ``any``; ACCESS is ``read``, ``write`` or ``readwrite``.

A publish and each delivered message are checked against their concrete topic. A subscription is refused
(SUBACK 0x80) when the first applicable rule that covers its whole filter denies it, or when no allow
rule reaches it at all; a subscription broader than a deny rule (``#`` against ``deny … home/garage/#``)
is granted and the denied topics are then withheld message by message. In a rule, ``#`` also covers
``$``-topics (a subscription's ``#`` does not match them, as MQTT requires; a rule is not a subscription).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.access import Principal
from gateway.errors import ConfigError

__all__ = ["HomeAcl", "Rule"]

_ACCESS = {
    "read": frozenset({"read"}),
    "write": frozenset({"write"}),
    "readwrite": frozenset({"read", "write"}),
}


@dataclass(frozen=True, slots=True)
class Rule:
    allow: bool
    who: str  # anonymous | user | user:<name> | key | any
    access: frozenset[str]
    pattern: tuple[str, ...]  # the filter's levels

    def applies_to(self, principal: Principal, access: str) -> bool:
        if access not in self.access:
            return False
        if self.who == "any":
            return True
        if self.who.startswith("user:"):
            return principal.kind == "user" and principal.label == self.who[5:]
        return principal.kind == self.who


def _parse(text: str) -> Rule:
    parts = text.split()
    if len(parts) != 4 or parts[0] not in ("allow", "deny") or parts[2] not in _ACCESS:
        raise ConfigError(f'[mqtt] home_acl: "{text}" is not "allow|deny WHO read|write|readwrite FILTER"')
    verdict, who, access, topic_filter = parts
    if who not in ("anonymous", "user", "key", "any") and not (who.startswith("user:") and len(who) > 5):
        raise ConfigError(f'[mqtt] home_acl: "{text}": WHO must be anonymous, user, user:<name>, key or any')
    levels = tuple(topic_filter.split("/"))
    if "#" in levels[:-1] or any(("+" in lv or "#" in lv) and len(lv) > 1 for lv in levels):
        raise ConfigError(f'[mqtt] home_acl: "{text}": {topic_filter} is not a valid MQTT filter')
    return Rule(verdict == "allow", who, _ACCESS[access], levels)


def _matches(pattern: tuple[str, ...], topic: list[str]) -> bool:
    """MQTT matching of a concrete topic against a rule's filter. Unlike a subscription, a rule's leading
    ``#`` or ``+`` also covers ``$``-topics: in a rule ``#`` means everything."""
    for index, level in enumerate(pattern):
        if level == "#":
            return True
        if index >= len(topic) or level not in ("+", topic[index]):
            return False
    return len(pattern) == len(topic)


def _covers(pattern: tuple[str, ...], requested: list[str]) -> bool:
    """Every topic ``requested`` (a filter) can match is matched by ``pattern``."""
    for index, level in enumerate(pattern):
        if level == "#":
            return True
        if index >= len(requested):
            return False
        wanted = requested[index]
        if wanted == "#" or (level != "+" and level != wanted):
            return False
    return len(pattern) == len(requested)


def _overlaps(pattern: tuple[str, ...], requested: list[str]) -> bool:
    """Some topic is matched by both filters."""
    for index, level in enumerate(pattern):
        if level == "#" or (index < len(requested) and requested[index] == "#"):
            return True
        if index >= len(requested):
            return False
        wanted = requested[index]
        if "+" not in (level, wanted) and level != wanted:
            return False
    return len(pattern) == len(requested) or (
        len(requested) > len(pattern) and requested[len(pattern)] == "#"
    )


class HomeAcl:
    def __init__(self, rules: Iterable[str]) -> None:
        self.rules = tuple(_parse(rule) for rule in rules)

    def allows(self, principal: Principal, access: str, topic: str) -> bool:
        """May ``principal`` publish (``write``) to or receive (``read``) this concrete topic?"""
        levels = topic.split("/")
        for rule in self.rules:
            if rule.applies_to(principal, access) and _matches(rule.pattern, levels):
                return rule.allow
        return False

    def allows_subscription(self, principal: Principal, topic_filter: str) -> bool:
        requested = topic_filter.split("/")
        for rule in self.rules:
            if not rule.applies_to(principal, "read"):
                continue
            if _covers(rule.pattern, requested):
                return rule.allow
            if rule.allow and _overlaps(rule.pattern, requested):
                return True  # granted; messages outside the allowed part are withheld one by one
        return False
