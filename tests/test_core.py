"""The routing core without its edges: publish, group commit, retention."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker.server import PushgateBroker
from gateway import outbox
from gateway.access import ANONYMOUS
from gateway.channels import Job, Outcome, State
from gateway.config import Config
from gateway.core import Gateway
from gateway.errors import Unavailable
from gateway.publish import NewMessage
from gateway.request import PushRequest, PushResult
from gateway.storage.models import Base, Delivery, Message, PushoverReceipt, Receipt
from tests.conftest import MqttClient, until
from tests.test_durability import write_lock_held_on
from tests.test_validation import EVERY_FIELD


async def count(gw: Gateway, model: type) -> int:
    async with gw.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def publishing(gw: Gateway, label: str, n: int) -> list[asyncio.Future[PushResult]]:
    """``n`` publishes on topic "t" (``<label>0``, ``<label>1`` …) started at once, not awaited."""
    return [
        asyncio.ensure_future(gw.publish(PushRequest(topic="t", message=f"{label}{i}", source="test")))
        for i in range(n)
    ]


async def flagged(gw: Gateway) -> list[str]:
    """The messages whose broadcast is pending (``Receipt.broadcast_pending``), in id order."""
    async with gw.sessions() as session:
        found = await session.scalars(
            select(Receipt.message_id).where(Receipt.broadcast_pending).order_by(Receipt.message_id)
        )
        return list(found.all())


async def test_concurrent_publishes_share_commits(config: Config) -> None:
    async with Gateway.running(config) as gw:
        await gw.admin.create_topic("t")
        results = await asyncio.gather(
            *(gw.publish(PushRequest(topic="t", message=f"m{i}", source="test")) for i in range(50))
        )
        assert len({r.id for r in results}) == 50
        assert await count(gw, Message) == 50 and await count(gw, Receipt) == 50
        assert gw.writer.commits < 50, "concurrent publishes are grouped into fewer transactions"


async def test_a_second_batch_is_handed_over_while_the_first_commits(config: Config) -> None:
    """Group commit as a pipeline: while one batch waits for its commit (here on another process's write
    lock), the next is already handed to the journal, so it follows without a round trip; both commit,
    and every push is stored once with its MQTT broadcast marked."""
    async with Gateway.running(config) as gw:
        gw.attach_mqtt(PushgateBroker(gw, config.mqtt))  # real broker, not started: rows stay pending
        await gw.admin.create_topic("t")
        async with write_lock_held_on(Path(config.storage.data_dir) / "pushgate.db"):
            pushes = asyncio.gather(
                *(gw.publish(PushRequest(topic="t", message=f"m{i}", source="test")) for i in range(40))
            )

            async def two_in_flight() -> bool:
                return gw.writer.in_flight == 2

            await until(two_in_flight, "a second batch handed over while the first waits")
            assert not pushes.done()  # nothing is answered before it is committed
        results = await asyncio.wait_for(pushes, 10)
        assert len({r.id for r in results}) == 40
        assert await count(gw, Message) == 40 and await count(gw, Delivery) == 0
        assert await flagged(gw) == sorted(r.id for r in results)


async def test_publishes_beyond_a_full_write_queue_wait_for_room_and_all_commit(config: Config) -> None:
    """Back-pressure: with both places in the journal taken (the database locked) and the write queue
    full (3 here), further publishes wait instead of queueing without bound; once the lock goes, each of
    them is committed and answered once."""
    config = dataclasses.replace(config, outbox=dataclasses.replace(config.outbox, write_queue_size=3))
    async with Gateway.running(config) as gw:
        await gw.admin.create_topic("t")
        await gw.publish(PushRequest(topic="t", message="warm-up", source="test"))  # the topic is cached
        async with write_lock_held_on(Path(config.storage.data_dir) / "pushgate.db"):
            first = publishing(gw, "a", 2)

            async def two_in_flight() -> bool:
                return gw.writer.in_flight == 2

            await until(two_in_flight, "both places in the journal taken")
            later = publishing(gw, "b", 8)

            async def queue_full() -> bool:
                return gw.writer.queued == 3

            await until(queue_full, "the write queue full")
            for _ in range(20):  # the other five keep waiting for room, the queue holds three
                await asyncio.sleep(0)
            assert gw.writer.queued == 3
            assert not any(push.done() for push in first + later)
        results = await asyncio.wait_for(asyncio.gather(*first, *later), 10)
        assert len({r.id for r in results}) == 10
        assert await count(gw, Message) == 11


async def test_the_next_batch_is_handed_over_before_a_committed_one_is_answered(config: Config) -> None:
    """When a batch commits, its place in the journal goes to what waits, and that batch is written to the
    journal before the committed pushes are answered and routed (``Publisher.submit`` is told in the
    commit's turn of the event loop), so the journal does not idle while the loop routes them."""
    async with Gateway.running(config) as gw:
        gw.attach_mqtt(PushgateBroker(gw, config.mqtt))  # real broker, not started: rows stay pending
        await gw.admin.create_topic("t")
        await gw.publish(PushRequest(topic="t", message="warm-up", source="test"))  # the topic is cached
        before = gw.journal.handed_over
        seen: list[tuple[int, int]] = []  # (pushes waiting, batches handed over since) when first told
        told: list[BaseException | None] = []
        all_told = asyncio.Event()

        def stored(error: BaseException | None) -> None:
            if not told:
                seen.append((gw.writer.queued, gw.journal.handed_over - before))
            told.append(error)
            if len(told) == 40:
                all_told.set()

        async with write_lock_held_on(Path(config.storage.data_dir) / "pushgate.db"):
            for i in range(40):
                gw.publisher.submit(PushRequest(topic="t", message=f"a{i}", source="test"), ANONYMOUS, stored)

            async def two_handed_over() -> bool:
                return gw.journal.handed_over - before == 2

            await until(two_handed_over, "both places in the journal taken")
            then = publishing(gw, "b", 10)

            async def ten_waiting() -> bool:
                return gw.writer.queued == 10

            await until(ten_waiting, "the next pushes waiting for a place")
        await asyncio.wait_for(all_told.wait(), 10)
        await asyncio.wait_for(asyncio.gather(*then), 10)
        assert told == [None] * 40
        # Nothing waits, and the next pushes are in the journal already: one batch, or two halves when both
        # places were free by the time the writer ran (a loaded machine reads both commits in one turn).
        assert len(seen) == 1
        waiting, handed = seen[0]
        assert waiting == 0
        assert handed in (3, 4)
        assert await count(gw, Message) == 51


async def test_a_group_the_database_refuses_fails_alone(config: Config) -> None:
    """A batch whose transaction fails on one group's rows is written again group by group: that push
    is refused ("send it again"), the others in its batch are stored."""
    async with Gateway.running(config) as gw:
        await gw.admin.create_topic("t")
        topic = await gw.topics.get("t")
        now = datetime.now(UTC)

        def emergency(message: NewMessage) -> list[Base]:  # the same receipt id twice: one must fail
            return [
                PushoverReceipt(
                    id="r" * 30,
                    message_id=message.id,
                    topic_id=topic.id,
                    retry=60,
                    next_send_at=now,
                    expires_at=now,
                    last_delivered_at=now,
                )
            ]

        requests = [PushRequest(topic="t", message=f"m{i}", source="test") for i in range(10)]
        async with write_lock_held_on(Path(config.storage.data_dir) / "pushgate.db"):
            pushes = asyncio.gather(
                *(
                    gw.publish(req, extra=emergency if i in (3, 6) else None)
                    for i, req in enumerate(requests)
                ),
                return_exceptions=True,
            )

            async def all_in_two_batches() -> bool:  # so the failing group has neighbours in its batch
                return gw.writer.in_flight == 2 and gw.writer.queued == 0

            await until(all_in_two_batches, "the ten pushes taken in two batches")
        results = await asyncio.wait_for(pushes, 10)
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 1 and isinstance(refused[0], Unavailable)
        assert await count(gw, Message) == 9 and await count(gw, PushoverReceipt) == 1


async def test_retention_prunes_old_messages_with_their_rows(config: Config) -> None:
    async with Gateway.running(config) as gw:
        gw.attach_mqtt(PushgateBroker(gw, config.mqtt))  # real broker, not started: rows stay pending
        await gw.admin.create_topic("t")
        result = await gw.publish(PushRequest(topic="t", message="old", source="test"))
        assert len(await flagged(gw)) == 1
        days = config.storage.retention_days
        assert await gw.prune(now=result.timestamp + timedelta(days=days) - timedelta(seconds=1)) == 0
        assert await gw.prune(now=result.timestamp + timedelta(days=days, seconds=1)) == 1
        left = [await count(gw, table) for table in (Message, Receipt, Delivery)]
        assert left == [0, 0, 0]


async def test_every_field_of_a_push_is_stored_in_its_own_column(config: Config) -> None:
    """The publisher builds the message positionally (for speed): each field reaches its own column."""
    async with Gateway.running(config) as gw:
        await gw.admin.create_topic("t")
        result = await gw.publish(PushRequest(topic="t", source="test", **EVERY_FIELD))  # type: ignore[arg-type]
        async with gw.sessions() as session:
            stored = await session.get(Message, result.id)
        assert stored is not None
        assert {name: getattr(stored, name) for name in EVERY_FIELD} == EVERY_FIELD
        assert (stored.source, stored.topic_id) == ("test", (await gw.topics.get("t")).id)


def test_a_new_messages_row_values_name_every_field() -> None:
    """``NewMessage.row`` spells its fields out (for speed), in the order of its columns: one added to the
    class must be stored too, and each value must go to its own column."""
    message = NewMessage(**{f.name: f"value of {f.name}" for f in dataclasses.fields(NewMessage)})
    shape, values = message.row()
    assert shape.table == "messages"
    assert dict(zip(shape.names, values, strict=True)) == {
        f.name: f"value of {f.name}" for f in dataclasses.fields(NewMessage)
    }


async def test_the_outbox_takes_one_broadcast_channel(config: Config) -> None:
    """A message's pending broadcast is one flag on its receipt, so a second broadcast channel is refused
    when attached rather than sharing it (and a crash losing the second channel's broadcasts)."""
    async with Gateway.running(config) as gw:
        gw.attach_mqtt(PushgateBroker(gw, config.mqtt))  # real broker, not started
        targeted = next(channel for name, channel in gw.outbox.lanes.items() if name != "mqtt")
        lane = gw.outbox._lanes[targeted.name]  # its concurrency and retry policy, as attached
        with pytest.raises(ValueError, match="one broadcast channel"):
            gw.outbox.add_channel(targeted, broadcast=True)
        assert list(gw.outbox.channels) == ["mqtt"]
        assert gw.outbox._lanes[targeted.name] is lane  # the refused attach changed nothing


async def test_outcomes_recorded_together_credit_each_receipt_once(config: Config) -> None:
    """The recorder's statements take their ids as IN lists padded by repeating the last id (``in_lists``):
    five outcomes (a list of six) still clear five broadcast flags, count one target on each receipt, and
    leave no delivery row."""
    async with Gateway.running(config) as gw:
        gw.attach_mqtt(PushgateBroker(gw, config.mqtt))  # real broker, not started: rows stay pending
        await gw.admin.create_topic("t")
        for i in range(5):
            await gw.publish(PushRequest(topic="t", message=f"m{i}", source="test"))
        marked = await flagged(gw)
        assert len(marked) == 5
        jobs = [Job(None, "mqtt", message_id, "t", b"") for message_id in marked]
        await gw.outbox.confirm([(job, Outcome(State.SENT, delivered=1)) for job in jobs])
        async with gw.sessions() as session:
            receipts = (await session.execute(select(Receipt.status, Receipt.delivered_count))).all()
        assert sorted(receipts) == [("delivered", 1)] * 5
        assert (await flagged(gw), await count(gw, Delivery)) == ([], 0)


async def test_broadcasts_beyond_the_outbox_memory_go_out_from_their_flags(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox holds at most ``_QUEUE_SIZE`` jobs in memory (4 here, 10,000 in service); the broadcasts
    of a burst beyond that are left to their receipts' flags, which its table scan reads back: every
    message reaches the hub once, and no flag is left."""
    monkeypatch.setattr(outbox, "_QUEUE_SIZE", 4)
    async with Gateway.running(config) as gw:
        broker = PushgateBroker(gw, config.mqtt)
        await broker.start()
        gw.attach_mqtt(broker)
        gw.start_delivery()
        hub = MqttClient(broker.port)
        try:
            await gw.admin.create_topic("t")
            assert not (await hub.connect()).is_failure
            await hub.subscribe("pushgate/t/message")
            pushes = (gw.publish(PushRequest(topic="t", message=f"m{i}", source="test")) for i in range(30))
            pushed = sorted(result.id for result in await asyncio.gather(*pushes))
            received = [json.loads((await hub.receive()).payload)["id"] for _ in pushed]
            assert sorted(received) == pushed
            assert gw.outbox.overflow > 0, "the burst did not go beyond the outbox's memory"

            async def recorded() -> bool:
                return await flagged(gw) == []

            await until(recorded, "every flag cleared")
            async with gw.sessions() as session:
                receipts = (await session.execute(select(Receipt.status, Receipt.delivered_count))).all()
            assert receipts == [("delivered", 1)] * 30
            with pytest.raises(queue.Empty):
                await hub.receive(timeout=0.5)  # nothing is sent twice
        finally:
            hub.close()
            await broker.shutdown()
