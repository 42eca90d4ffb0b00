"""The broker's replaced hot paths (issue 3): the in-flight window, packets cut from whatever a read
returns, and no Task per relayed or pushed message. Raw MQTT on pushgate's broker only (stock amqtt has
no window and makes Tasks by design)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import amqtt
import pytest

import broker
from broker import wire
from broker.server import PushgateBroker
from tests.brokers import (
    Packet,
    RawClient,
    puback_packet,
    publish_packet,
    pushgate_broker,
    subscribe_packet,
)
from tests.conftest import until

QUIET = 0.5  # seconds a bounded watch waits to see that nothing more arrives


async def connected(port: int, client_id: str, who: tuple[str, str], *, clean: bool = True) -> RawClient:
    client = await RawClient.open(port)
    await client.connect(client_id, username=who[0], password=who[1], clean=clean)
    return client


async def subscribed(client: RawClient, topic: str, qos: int) -> None:
    await client.send(subscribe_packet(1, topic, qos))
    suback = await client.read_packet()
    assert suback is not None and suback.type == 9 and suback.body[2] == qos


async def publish_acked(client: RawClient, topic: str, payloads: list[bytes]) -> None:
    """QoS 1 publishes, pipelined, and every PUBACK back (the broker routed each before answering)."""
    await client.send(
        b"".join(publish_packet(topic, p, qos=1, packet_id=i + 1) for i, p in enumerate(payloads))
    )
    acked = [await client.read_packet() for _ in payloads]
    assert [(p.type, p.body) for p in acked if p] == [
        (4, (i + 1).to_bytes(2, "big")) for i in range(len(payloads))
    ]


async def publishes(client: RawClient, count: int) -> list[Packet]:
    packets = [await client.read_packet() for _ in range(count)]
    assert all(p is not None and p.type == 3 for p in packets), packets
    return packets  # type: ignore[return-value]


async def nothing_more(client: RawClient) -> bool:
    with contextlib.suppress(TimeoutError):
        await client.read_packet(QUIET)
        return False
    return True


def handler_of(broker: PushgateBroker, client_id: str):  # noqa: ANN201
    return broker.sessions[client_id][1]


async def test_inflight_window_holds_back_until_acknowledged(tmp_path: Path) -> None:
    async with pushgate_broker(tmp_path, max_inflight=3, max_queued_messages=100) as under_test:
        alice = under_test.alice
        sub = await connected(under_test.port, "slow-reader", alice)
        pub = await connected(under_test.port, "fast-writer", alice)
        try:
            await subscribed(sub, "home/w", 1)
            await publish_acked(pub, "home/w", [f"m{i}".encode() for i in range(10)])

            handler = handler_of(under_test.broker, "slow-reader")
            assert (len(handler.session.inflight_out), handler.waiting) == (3, 7)
            first = await publishes(sub, 3)
            assert [p.publish_payload for p in first] == [b"m0", b"m1", b"m2"]
            assert await nothing_more(sub), "more than the window was sent"

            await sub.send(puback_packet(first[0].publish_packet_id))
            (fourth,) = await publishes(sub, 1)
            assert fourth.publish_payload == b"m3"
            assert await nothing_more(sub)

            unacked = [fourth, *first[1:]]
            payloads = [p.publish_payload for p in first] + [b"m3"]
            while len(payloads) < 10:
                for packet in unacked:
                    await sub.send(puback_packet(packet.publish_packet_id))
                unacked = await publishes(sub, min(3, 10 - len(payloads)))
                payloads += [p.publish_payload for p in unacked]
            assert payloads == [f"m{i}".encode() for i in range(10)]
        finally:
            sub.close()
            pub.close()


async def test_messages_waiting_for_the_window_survive_a_reconnect(tmp_path: Path) -> None:
    async with pushgate_broker(tmp_path, max_inflight=2, max_queued_messages=100) as under_test:
        alice = under_test.alice
        sub = await connected(under_test.port, "hub", alice, clean=False)
        pub = await connected(under_test.port, "sender", alice)
        try:
            await subscribed(sub, "home/r", 1)
            await publish_acked(pub, "home/r", [f"r{i}".encode() for i in range(5)])
            assert [p.publish_payload for p in await publishes(sub, 2)] == [b"r0", b"r1"]
            sub.close()  # two in flight, three waiting

            sub = await connected(under_test.port, "hub", alice, clean=False)
            again = await publishes(sub, 2)
            assert [(p.publish_payload, bool(p.flags & 0x08)) for p in again] == [
                (b"r0", True),
                (b"r1", True),
            ]
            for packet in again:
                await sub.send(puback_packet(packet.publish_packet_id))
            later = await publishes(sub, 2)
            assert [p.publish_payload for p in later] == [b"r2", b"r3"]
            for packet in later:
                await sub.send(puback_packet(packet.publish_packet_id))
            assert [p.publish_payload for p in await publishes(sub, 1)] == [b"r4"]
        finally:
            sub.close()
            pub.close()


async def test_messages_published_together_reach_every_subscriber_in_order(tmp_path: Path) -> None:
    """``publish_many``, the core's MQTT delivery of what committed together: the topic's subscribers are
    found and checked once, each gets every message, in order, and the count is of sessions, not copies."""
    async with pushgate_broker(tmp_path) as under_test:
        alice = under_test.alice
        hub = await connected(under_test.port, "hub", alice)
        panel = await connected(under_test.port, "panel", alice)
        try:
            await subscribed(hub, "pushgate/a/message", 1)
            await subscribed(panel, "pushgate/a/message", 0)
            payloads = [f"m{i}".encode() for i in range(3)]
            assert await under_test.broker.publish_many("pushgate/a/message", payloads, 1) == 2
            at_qos1 = await publishes(hub, 3)
            assert [(p.publish_payload, p.publish_qos) for p in at_qos1] == [(m, 1) for m in payloads]
            assert len({p.publish_packet_id for p in at_qos1}) == 3
            assert [(p.publish_payload, p.publish_qos) for p in await publishes(panel, 3)] == [
                (m, 0) for m in payloads
            ]
            assert await under_test.broker.publish_many("pushgate/b/message", payloads, 1) == 0
            assert await nothing_more(hub) and await nothing_more(panel)
        finally:
            hub.close()
            panel.close()


async def test_packets_are_cut_from_any_read_boundary(tmp_path: Path) -> None:
    """Many packets in one write, and one packet split byte by byte, are both handled in order."""
    async with pushgate_broker(tmp_path) as under_test:
        alice = under_test.alice
        sub = await connected(under_test.port, "reader", alice)
        pub = await connected(under_test.port, "writer", alice)
        try:
            await subscribed(sub, "home/b", 0)
            await pub.send(b"".join(publish_packet("home/b", f"{i}".encode()) for i in range(50)))
            split = publish_packet("home/b", b"x" * 300)  # two-byte remaining length
            for byte in split:
                await pub.send(bytes([byte]))
            received = [p.publish_payload for p in await publishes(sub, 51)]
            assert received == [f"{i}".encode() for i in range(50)] + [b"x" * 300]
        finally:
            sub.close()
            pub.close()


@contextlib.contextmanager
def counting_tasks(loop: asyncio.AbstractEventLoop) -> Iterator[list[str]]:
    """Names of the coroutines of every Task the broker (``broker/`` or amqtt) created on ``loop``
    meanwhile. Tasks of the core's own background loops (the outbox's poll, maintenance, discovery) are
    not the relay's and are left out: they come and go with time, not with messages."""
    made: list[str] = []
    previous = loop.get_task_factory()
    broker_dir = str(Path(broker.__file__).parent)
    amqtt_dir = str(Path(amqtt.__file__).parent)

    def factory(loop: asyncio.AbstractEventLoop, coro, **kwargs):  # noqa: ANN001, ANN202
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename.startswith((broker_dir, amqtt_dir)):
                made.append(getattr(coro, "__qualname__", repr(coro)))
                break
            frame = frame.f_back
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        yield made
    finally:
        loop.set_task_factory(previous)


@pytest.mark.parametrize("qos", [0, 1])
async def test_relay_makes_no_task_per_message(tmp_path: Path, qos: int) -> None:
    async with pushgate_broker(tmp_path, max_queued_messages=1000) as under_test:
        alice = under_test.alice
        sub = await connected(under_test.port, "reader", alice)
        pub = await connected(under_test.port, "writer", alice)
        try:
            await subscribed(sub, "home/t", qos)
            with counting_tasks(asyncio.get_running_loop()) as made:
                if qos:
                    await publish_acked(pub, "home/t", [f"{i}".encode() for i in range(200)])
                else:
                    await pub.send(b"".join(publish_packet("home/t", f"{i}".encode()) for i in range(200)))
                received = []
                for _ in range(200):
                    (packet,) = await publishes(sub, 1)
                    received.append(packet.publish_payload)
                    if qos:
                        await sub.send(puback_packet(packet.publish_packet_id))
            assert received == [f"{i}".encode() for i in range(200)]
            assert made == []
        finally:
            sub.close()
            pub.close()


async def test_cached_topic_push_makes_no_task_in_the_broker(tmp_path: Path) -> None:
    """The ingest hook hands each push to ``Publisher.submit`` and acknowledges from its callback."""
    async with pushgate_broker(tmp_path) as under_test:
        alice = under_test.alice
        device = await connected(under_test.port, "device", alice)
        try:
            await publish_acked(device, "pushgate/a/push", [b"warm-up"])  # the topic is now cached
            with counting_tasks(asyncio.get_running_loop()) as made:
                await publish_acked(device, "pushgate/a/push", [f"push {i}".encode() for i in range(50)])
            from_broker = [name for name in made if "Broker" in name or "Handler" in name or "submit" in name]
            assert from_broker == []
            assert len(made) < 50, made  # the core's own work is batched, not per message either
        finally:
            device.close()


async def test_ending_sessions_take_only_their_own_subscriptions(tmp_path: Path) -> None:
    """``_del_all_subscriptions`` visits the ending session's filters, not every filter in the broker (as
    upstream did: quadratic in the number of devices when they all go at once); what others hold stays."""
    async with pushgate_broker(tmp_path, max_connections=20) as under_test:
        alice, broker = under_test.alice, under_test.broker
        clients = [await connected(under_test.port, f"dev-{n}", alice) for n in range(12)]
        try:
            for n, client in enumerate(clients):
                await subscribed(client, f"home/dev/{n}", 1)
                await subscribed(client, "home/all", 0)
            leaving, staying = clients[:6], clients[6:]
            for client in leaving:
                await client.send(b"\xe0\x00")  # DISCONNECT
                client.close()

            async def gone() -> bool:
                return all(f"dev-{n}" not in broker._sessions for n in range(6))

            await until(gone, "the clean sessions of the six that left to end")
            assert not any(f"home/dev/{n}" in broker._subscriptions for n in range(6))
            assert {s.client_id for s, _ in broker._subscriptions["home/all"]} == {
                f"dev-{n}" for n in range(6, 12)
            }
            assert len(broker._tree) == 6 + 6 and broker._tree.filters_of("dev-0") == ()
            writer = await connected(under_test.port, "writer", alice)
            await writer.send(publish_packet("home/all", b"everyone"))
            await publish_acked(writer, "home/dev/7", [b"seven"])
            writer.close()
            for n, client in enumerate(staying, 6):
                packets = await publishes(client, 2 if n == 7 else 1)
                assert sorted(p.publish_payload for p in packets) == sorted(
                    [b"everyone", b"seven"] if n == 7 else [b"everyone"]
                )
        finally:
            for client in clients:
                client.close()


def test_split_packets_keeps_the_incomplete_rest() -> None:
    one = publish_packet("a/b", b"payload", qos=1, packet_id=7)
    packets, rest = wire.split_packets(one + one[:3], 1024)
    assert packets == [(one[0], one[2:])] and rest == one[:3]
    assert wire.parse_publish(packets[0][0], packets[0][1]) == ("a/b", 7, b"payload")
    with pytest.raises(wire.PacketTooLarge):
        wire.split_packets(publish_packet("a", b"x" * 200), 100)
    with pytest.raises(wire.MalformedPacket):
        wire.parse_publish(0x30, b"\x00\x03a/#")


def test_outgoing_encodes_what_a_client_parses() -> None:
    message = wire.Outgoing("home/x", b"data" * 40)
    assert message.packet(0) == publish_packet("home/x", b"data" * 40)
    assert message.packet(1, 513) == publish_packet("home/x", b"data" * 40, qos=1, packet_id=513)
    retained_dup = message.packet(1, 2, retain=True, dup=True)
    assert retained_dup[0] == 0x30 | 0x08 | 0x02 | 0x01


def test_a_window_of_zero_is_refused_at_start() -> None:
    from gateway.config import MqttConfig
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="max_inflight must be at least 1"):
        PushgateBroker(None, MqttConfig(max_inflight=0))  # type: ignore[arg-type]
