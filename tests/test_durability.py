"""Nothing accepted is lost when the database refuses a write for a while (another process holds SQLite's
write lock longer than ``[storage] sqlite_busy_timeout``):

- a QoS 2 push that could not be stored is not completed, and is stored when the client sends its PUBREL
  again: the held message is let go only once it is on disk;
- a delivery whose outcome could not be recorded is sent again (at least once) and then recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sqlite3
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.admin import Admin
from gateway.config import Config, StorageConfig
from tests.brokers import RawClient, _packet, publish_packet, pushgate_broker
from tests.conftest import MqttClient, Server, bearer, stored_messages, until, user
from tests.test_webhooks import Target, create_webhook, deliveries, owned_topic, push

PINGREQ = b"\xc0\x00"


@pytest.fixture
def config(config: Config) -> Config:
    """The suite's configuration, with a short wait for another process's write lock, a fast outbox poll,
    and webhooks allowed to reach a receiver on loopback."""
    return dataclasses.replace(
        config,
        storage=dataclasses.replace(config.storage, sqlite_busy_timeout=0.2),
        outbox=dataclasses.replace(config.outbox, poll_interval=0.2),
        webhooks=dataclasses.replace(config.webhooks, allowed_hosts=("127.0.0.1",)),
    )


def write_lock_held(config: Config) -> contextlib.AbstractAsyncContextManager[None]:
    return write_lock_held_on(Path(config.storage.data_dir) / "pushgate.db")


@contextlib.asynccontextmanager
async def write_lock_held_on(database: Path) -> AsyncIterator[None]:
    """Another process's transaction holding the database's write lock (a backup, a sqlite3 shell). Taken
    in a thread: the gateway runs on this event loop and may be mid-transaction, so blocking the loop while
    waiting for the lock would keep it from ever committing."""
    holder = sqlite3.connect(database, isolation_level=None, timeout=30, check_same_thread=False)
    await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _pending_deliveries(config: Config) -> int:
    with contextlib.closing(sqlite3.connect(Path(config.storage.data_dir) / "pushgate.db")) as db:
        return int(db.execute("SELECT count(*) FROM deliveries WHERE state = 'pending'").fetchone()[0])


def pubrel(packet_id: int) -> bytes:
    return _packet(0x62, struct.pack("!H", packet_id))


@dataclasses.dataclass
class Door:
    """Topic ``door``: its key, a hub on its messages and errors, a raw-socket sensor (not connected)."""

    key: str
    hub: MqttClient
    sensor: RawClient


@pytest.fixture
async def door(server: Server, admin: Admin, make_client: Any) -> AsyncIterator[Door]:
    await admin.create_topic("door")
    key = (await admin.create_key("door", label="sensor")).secret
    hub: MqttClient = await make_client()
    for leaf in ("message", "error"):
        assert await hub.subscribe(f"pushgate/door/{leaf}") == 1
    sensor = await RawClient.open(server.mqtt_port)
    try:
        yield Door(key, hub, sensor)
    finally:
        sensor.close()


async def stores_failed(caplog: pytest.LogCaptureFixture, count: int) -> None:
    """Wait until the group-commit writer has logged ``count`` failed writes (the lock outlasted its wait)."""

    async def failed() -> bool:
        return sum(r.getMessage() == "write failed" for r in caplog.records) >= count

    await until(failed, f"{count} failed writes")


async def test_a_qos2_push_that_failed_to_store_is_stored_on_the_pubrel_sent_again(
    server: Server, door: Door, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.writer")
    device = door.sensor
    connack = await device.connect("door-sensor", username="door-sensor", password=door.key, clean=False)
    assert connack.body[1] == 0

    async with write_lock_held(server.config):
        await device.send(publish_packet("pushgate/door/push", b"Front door opened", qos=2, packet_id=7))
        pubrec = await device.read_packet()
        assert pubrec is not None and (pubrec.type, pubrec.body) == (5, b"\x00\x07")
        await device.send(pubrel(7))
        await stores_failed(caplog, 1)
        await device.send(PINGREQ)
        answer = await device.read_packet()
        assert answer is not None and answer.type == 13, "no PUBCOMP for a message that is not stored"

    # The client sends its PUBREL again (MQTT 3.1.1 4.4, here on the same connection).
    await device.send(pubrel(7))
    pubcomp = await device.read_packet()
    assert pubcomp is not None and (pubcomp.type, pubcomp.body) == (7, b"\x00\x07")
    envelope = json.loads((await door.hub.receive()).payload)
    assert envelope["message"] == "Front door opened"
    assert [m.message for m in await stored_messages(server.config)] == ["Front door opened"]

    await device.send(pubrel(7))  # once more: delivered already, answered without storing again
    again = await device.read_packet()
    assert again is not None and (again.type, again.body) == (7, b"\x00\x07")
    assert len(await stored_messages(server.config)) == 1


async def test_a_delivery_whose_outcome_could_not_be_recorded_is_sent_again(
    server: Server, admin: Admin, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.outbox")
    auth = await user(admin, "alice")
    await owned_topic(http, auth)
    target = await Target().start()
    answer = asyncio.Event()
    target.hold = answer
    try:
        hook = await create_webhook(http, auth, url=target.url(), events=["action"])
        pushed = await push(http, auth)
        acted = await http.post(
            "/api/action", json={"message_id": pushed["id"], "action_id": "approve"}, headers=auth
        )
        assert acted.status_code == 200, acted.text
        first = await target.next()  # sent; its answer waits until the database is locked

        async def only_the_held_send_pending() -> bool:
            # The push's and the action's MQTT deliveries (no subscriber: waiting) are recorded first, so
            # the write that fails on the lock below is the one of the webhook's outcome.
            return await asyncio.to_thread(_pending_deliveries, server.config) == 1

        await until(only_the_held_send_pending, "every outcome but the held send's to be recorded")
        async with write_lock_held(server.config):
            answer.set()

            async def unrecorded() -> bool:
                return any("could not be recorded" in r.getMessage() for r in caplog.records)

            await until(unrecorded, "the outcome's write to fail on the held lock")

        again = await target.next()
        assert again.headers["x-pushgate-delivery"] == first.headers["x-pushgate-delivery"]
        assert again.body == first.body and again.verifies(hook["secret"])

        async def recorded() -> Any:
            log = await deliveries(http, auth, hook["id"])
            return log[0] if log and log[0]["state"] == "sent" else None

        row = await until(recorded, "the second send recorded")
        assert row["id"] == first.headers["x-pushgate-delivery"] and row["last_error"] is None
        assert len(await deliveries(http, auth, hook["id"])) == 1
    finally:
        await target.close()


async def test_a_push_refused_by_the_database_answers_503_over_http_and_gets_no_puback_over_mqtt(
    server: Server, door: Door, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.writer")
    device = door.sensor
    await device.connect("door-sensor", username="door-sensor", password=door.key)
    async with write_lock_held(server.config):
        refused = await http.post("/api/push/door", content="Over HTTP", headers=bearer(door.key))
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "Service unavailable"
        assert "could not be stored" in refused.json()["message"]
        assert refused.headers["retry-after"] == "1"

        await device.send(publish_packet("pushgate/door/push", b"Over MQTT", qos=1, packet_id=3))
        await stores_failed(caplog, 2)
        await device.send(PINGREQ)
        answer = await device.read_packet()
        assert answer is not None and answer.type == 13, "no PUBACK for a message that is not stored"

    # The device sends it again (DUP), as a client does without its PUBACK; now it is stored once.
    resent = publish_packet("pushgate/door/push", b"Over MQTT", qos=1, packet_id=3)
    await device.send(bytes([resent[0] | 0x08]) + resent[1:])
    puback = await device.read_packet()
    assert puback is not None and (puback.type, puback.body) == (4, b"\x00\x03")
    delivered = await door.hub.receive()
    assert delivered.topic == "pushgate/door/message"  # not on …/error: the server's fault, not the device's
    assert json.loads(delivered.payload)["message"] == "Over MQTT"
    assert [m.message for m in await stored_messages(server.config)] == ["Over MQTT"]


async def test_a_burst_the_database_refuses_is_refused_together(
    server: Server, door: Door, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Pushes that share a transaction share its refusal: each gets its 503 after one wait for the lock,
    not after one more wait per push (a backup holding the lock would otherwise hold the burst N times)."""
    caplog.set_level(logging.ERROR, logger="gateway.writer")
    async with write_lock_held(server.config):
        answers = await asyncio.gather(
            *(
                http.post("/api/push/door", content=f"reading {n}", headers=bearer(door.key))
                for n in range(10)
            )
        )
    assert [a.status_code for a in answers] == [503] * 10
    failed = sum(r.getMessage() == "write failed" for r in caplog.records)
    assert failed < 10, f"{failed} failed writes for 10 pushes: the batch was retried push by push"
    assert await stored_messages(server.config) == []


async def test_any_request_the_database_cannot_take_now_answers_503(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    """Not only pushes: an action report that must update a receipt, while the write lock is held."""
    auth = await user(admin, "alice")
    await owned_topic(http, auth)
    pushed = await push(http, auth)
    async with write_lock_held(server.config):
        report = {"message_id": pushed["id"], "action_id": "approve"}
        refused = await http.post("/api/action", json=report, headers=auth)
        assert refused.status_code == 503, refused.text
        assert refused.json() == {
            "error": "Service unavailable",
            "message": "The database cannot take this request now; send it again shortly.",
        }
        assert refused.headers["retry-after"] == "1"
    accepted = await http.post("/api/action", json=report, headers=auth)
    assert accepted.status_code == 200, accepted.text
    receipt = (await http.get(f"/api/receipts/{pushed['receipt_id']}", headers=auth)).json()
    assert receipt["status"] == "acted" and receipt["acted_count"] == 1


async def test_a_push_flood_waits_in_tcp_while_storage_is_held_up(tmp_path: Path) -> None:
    """With ``[mqtt] max_pending_pushes`` 5 and the database's write lock held by another process, a device
    that sends 50 pushes at once is not read on past them (they wait in TCP, not in the broker's memory);
    once the lock goes, every push is stored and the device is read again."""
    async with pushgate_broker(tmp_path, max_pending_pushes=5) as under_test:
        broker = under_test.broker
        device = await RawClient.open(under_test.port)
        try:
            await device.connect("flood", username=under_test.alice[0], password=under_test.alice[1])
            database = tmp_path / "data" / "pushgate.db"
            async with write_lock_held_on(database):
                flood = b"".join(
                    publish_packet("pushgate/a/push", f"reading {n}".encode(), qos=1, packet_id=n + 1)
                    for n in range(50)
                )
                await device.send(flood)

                async def held() -> bool:
                    return broker.ingest_pauses > 0

                await until(held, "the device's reading to wait for room")
                await device.send(PINGREQ)  # stays unread in TCP while the reader waits
            acks = []
            while len(acks) < 51:
                packet = await device.read_packet()
                assert packet is not None
                acks.append(packet.type)
            assert acks == [4] * 50 + [13]  # every PUBACK (each after its commit), then the PINGRESP
        finally:
            device.close()
        config = Config(storage=StorageConfig(data_dir=str(tmp_path / "data")))
        stored = sorted(m.message for m in await stored_messages(config))
        assert stored == sorted(f"reading {n}" for n in range(50))
