"""A QoS 2 push the gateway could not store is not completed, and is stored when the client sends its
PUBREL again: the held message is let go only once it is on disk."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import struct
from pathlib import Path

import pytest

from gateway.admin import Admin
from gateway.config import Config
from tests.brokers import RawClient, _packet, publish_packet
from tests.conftest import MqttClient, Server, stored_messages, until

PINGREQ = b"\xc0\x00"


@pytest.fixture
def config(config: Config) -> Config:
    """The suite's configuration, with a short wait for another process's write lock."""
    return dataclasses.replace(config, storage=dataclasses.replace(config.storage, sqlite_busy_timeout=0.2))


def pubrel(packet_id: int) -> bytes:
    return _packet(0x62, struct.pack("!H", packet_id))


async def test_a_qos2_push_that_failed_to_store_is_stored_on_the_pubrel_sent_again(
    server: Server, admin: Admin, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.writer")
    await admin.create_topic("door")
    key = (await admin.create_key("door", label="sensor")).secret
    hub: MqttClient = await make_client()
    assert await hub.subscribe("pushgate/door/message") == 1
    device = await RawClient.open(server.mqtt_port)
    try:
        connack = await device.connect("door-sensor", username="door-sensor", password=key, clean=False)
        assert connack.body[1] == 0

        # Another process (a backup, a sqlite3 shell) holds the database's write lock.
        holder = sqlite3.connect(Path(server.config.storage.data_dir) / "pushgate.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            await device.send(publish_packet("pushgate/door/push", b"Front door opened", qos=2, packet_id=7))
            pubrec = await device.read_packet()
            assert pubrec is not None and (pubrec.type, pubrec.body) == (5, b"\x00\x07")
            await device.send(pubrel(7))

            async def failed() -> bool:
                return any(r.getMessage() == "write failed" for r in caplog.records)

            await until(failed, "the store to fail on the held lock")
            await device.send(PINGREQ)
            answer = await device.read_packet()
            assert answer is not None and answer.type == 13, "no PUBCOMP for a message that is not stored"
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        # The client sends its PUBREL again (MQTT 3.1.1 4.4, here on the same connection).
        await device.send(pubrel(7))
        pubcomp = await device.read_packet()
        assert pubcomp is not None and (pubcomp.type, pubcomp.body) == (7, b"\x00\x07")
        envelope = json.loads((await hub.receive()).payload)
        assert envelope["message"] == "Front door opened"
        assert [m.message for m in await stored_messages(server.config)] == ["Front door opened"]

        await device.send(pubrel(7))  # once more: delivered already, answered without storing again
        again = await device.read_packet()
        assert again is not None and (again.type, again.body) == (7, b"\x00\x07")
        assert len(await stored_messages(server.config)) == 1
    finally:
        device.close()
