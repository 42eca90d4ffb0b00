"""Subscriptions as a tree of topic levels, so routing a publish costs what matches it, not every filter.

amqtt 0.12.1 tests each publish against every filter in the broker (with debug strings built for each
miss); with 2,000 devices each holding their own subscription, that dominated the broker's time. Here a
publish walks one path per wildcard branch. Semantics are MQTT 3.1.1 section 4.7: ``+`` matches one level,
``#`` the rest including the parent (``a/#`` matches ``a``), and topics starting with ``$`` are not matched
by a ``+`` or ``#`` in the first level.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["TopicTree"]

S = TypeVar("S")
ROUTES_KEPT = 4096  # topics whose matches are remembered; past this the memory starts over


class _Node(Generic[S]):
    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node[S]] = {}
        # client id -> (subscriber, granted QoS); one entry per client and filter, as MQTT requires
        self.subscribers: dict[str, tuple[S, int]] = {}


class TopicTree(Generic[S]):
    """Filters to subscribers. ``S`` is whatever the broker keeps per subscriber (an amqtt ``Session``)."""

    __slots__ = ("_root", "_count", "_routes", "_filters")

    def __init__(self) -> None:
        self._root: _Node[S] = _Node()
        self._count = 0
        # client id -> its filters, so a session's subscriptions are found without visiting every filter
        self._filters: dict[str, set[str]] = {}
        # topic -> its matches, until the next subscription change: a device or a sensor publishes to the
        # same few topics again and again, so routing is usually one dict lookup
        self._routes: dict[str, list[tuple[str, S, int]]] = {}

    def __len__(self) -> int:
        """Number of (filter, client) subscriptions held."""
        return self._count

    def add(self, topic_filter: str, client_id: str, subscriber: S, qos: int) -> None:
        """Subscribe, or replace the QoS of the client's existing subscription to this filter."""
        node = self._root
        for level in topic_filter.split("/"):
            node = node.children.setdefault(level, _Node())
        if client_id not in node.subscribers:
            self._count += 1
            self._filters.setdefault(client_id, set()).add(topic_filter)
        node.subscribers[client_id] = (subscriber, qos)
        self._routes.clear()

    def remove(self, topic_filter: str, client_id: str) -> bool:
        """Unsubscribe; empty branches are pruned so the tree does not grow with churn."""
        path: list[tuple[_Node[S], str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if node.subscribers.pop(client_id, None) is None:
            return False
        self._count -= 1
        filters = self._filters[client_id]
        filters.discard(topic_filter)
        if not filters:
            del self._filters[client_id]
        self._routes.clear()
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.subscribers or child.children:
                break
            del parent.children[level]
        return True

    def clear(self) -> None:
        self._root = _Node()
        self._count = 0
        self._routes.clear()
        self._filters.clear()

    def holds(self, client_id: str, topic_filter: str) -> bool:
        return topic_filter in self._filters.get(client_id, ())

    def filters_of(self, client_id: str) -> tuple[str, ...]:
        """The filters ``client_id`` is subscribed to (a copy: removing them while iterating is safe)."""
        return tuple(self._filters.get(client_id, ()))

    def route(self, topic: str) -> list[tuple[str, S, int]]:
        """``match`` as a list, remembered until the subscriptions change (at most ``ROUTES_KEPT`` topics).
        The list is shared: callers must not change it."""
        routes = self._routes
        found = routes.get(topic)
        if found is None:
            if len(routes) >= ROUTES_KEPT:
                routes.clear()
            found = routes[topic] = list(self.match(topic))
        return found

    def match(self, topic: str) -> Iterator[tuple[str, S, int]]:
        """Every (client id, subscriber, QoS) whose filter matches ``topic``; a client appears once per
        matching filter (MQTT 3.1.1 allows delivering once per overlapping subscription)."""
        levels = topic.split("/")
        depth = len(levels)
        no_wildcard_at_root = topic.startswith("$")
        stack: list[tuple[_Node[S], int]] = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            if index == depth:
                yield from _entries(node)
                rest = node.children.get("#")  # "a/#" also matches "a"
                if rest is not None:
                    yield from _entries(rest)
                continue
            if not (no_wildcard_at_root and index == 0):
                rest = node.children.get("#")
                if rest is not None:
                    yield from _entries(rest)
                one = node.children.get("+")
                if one is not None:
                    stack.append((one, index + 1))
            exact = node.children.get(levels[index])
            if exact is not None:
                stack.append((exact, index + 1))


def _entries(node: _Node[S]) -> Iterator[tuple[str, S, int]]:
    for client_id, (subscriber, qos) in node.subscribers.items():
        yield client_id, subscriber, qos
