"""The subscription tree against MQTT 3.1.1 section 4.7, and against amqtt's own matcher as an oracle."""

from __future__ import annotations

import itertools
import random

import pytest
from amqtt.broker import Broker

from broker.topic_tree import TopicTree


def matches(tree: TopicTree[str], topic: str) -> set[tuple[str, int]]:
    return {(client, qos) for client, _subscriber, qos in tree.match(topic)}


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("sport/tennis/player1/#", "sport/tennis/player1", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/#", "sport", True),
        ("#", "sport/tennis", True),
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("#", "$SYS/broker", False),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/monitor/Clients", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("a/b", "a/b", True),
        ("a/b", "a/b/c", False),
        ("a/b", "a", False),
    ],
)
def test_spec_examples(topic_filter: str, topic: str, expected: bool) -> None:
    tree: TopicTree[str] = TopicTree()
    tree.add(topic_filter, "c", "session", 1)
    assert bool(matches(tree, topic)) is expected


def test_add_replaces_qos_and_remove_prunes() -> None:
    tree: TopicTree[str] = TopicTree()
    tree.add("a/+/c", "x", "sx", 0)
    tree.add("a/+/c", "x", "sx", 2)
    tree.add("a/#", "y", "sy", 1)
    assert len(tree) == 2
    assert matches(tree, "a/b/c") == {("x", 2), ("y", 1)}
    assert tree.remove("a/+/c", "x") and not tree.remove("a/+/c", "x")
    assert matches(tree, "a/b/c") == {("y", 1)}
    assert tree.remove("a/#", "y")
    assert len(tree) == 0 and tree._root.children == {}


def test_filters_of_a_client_follow_add_remove_and_clear() -> None:
    """What ``PushgateBroker._del_all_subscriptions`` visits when a session ends: its own filters only."""
    tree: TopicTree[str] = TopicTree()
    tree.add("dev/1", "one", "s1", 1)
    tree.add("shared/#", "one", "s1", 0)
    tree.add("shared/#", "two", "s2", 0)
    tree.add("shared/#", "one", "s1", 1)  # a new QoS, not a new filter
    assert sorted(tree.filters_of("one")) == ["dev/1", "shared/#"]
    assert tree.filters_of("two") == ("shared/#",) and tree.filters_of("nobody") == ()
    assert tree.holds("two", "shared/#") and not tree.holds("two", "dev/1") and not tree.holds("x", "dev/1")
    for topic_filter in tree.filters_of("one"):  # a copy: removing while iterating is safe
        assert tree.remove(topic_filter, "one")
    assert tree.filters_of("one") == () and matches(tree, "shared/x") == {("two", 0)}
    tree.clear()
    assert tree.filters_of("two") == () and len(tree) == 0


def test_agrees_with_amqtt_matcher_on_random_filters() -> None:
    """amqtt's ``Broker._matches`` is a straightforward (if slow) implementation: use it as the oracle."""
    rng = random.Random(7)
    words = ["a", "b", "c", "", "$SYS"]
    oracle = Broker.__new__(Broker)  # _matches reads nothing but its arguments and a logger
    import logging

    oracle.logger = logging.getLogger("oracle")
    tree: TopicTree[str] = TopicTree()
    filters = set()
    for i in range(300):
        levels = [rng.choice([*words, "+"]) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            levels.append("#")
        topic_filter = "/".join(levels)
        filters.add(topic_filter)
        tree.add(topic_filter, f"client-{i}", topic_filter, 0)
    topics = ["/".join(p) for n in range(1, 4) for p in itertools.product(words, repeat=n)]
    for topic in topics:
        expected = {f for f in filters if oracle._matches(topic, f)}
        assert {subscriber for _, subscriber, _ in tree.match(topic)} == expected, topic
