"""Durability: what the gateway answered survives SIGKILL, and its MQTT delivery goes out after restart."""

from __future__ import annotations

import functools
import json
import signal
from pathlib import Path

import httpx

from gateway.config import Config, StorageConfig
from tests.brokers import RawClient, publish_packet
from tests.conftest import MqttClient, stored_messages, until
from tests.process import gateway_env, helpers, pushgate, running, start_gateway

BURST = 25


async def test_sigkill_right_after_answering_loses_nothing(tmp_path: Path) -> None:
    env = gateway_env(tmp_path / "data")
    assert (await pushgate(env, "topic", "create", "my-topic"))[0] == 0

    first = await start_gateway(env)
    answered: list[str] = []
    async with httpx.AsyncClient(base_url=first.http_url) as http:
        for i in range(BURST):
            response = await http.post("/api/push/my-topic", content=f"reading {i}")
            assert response.status_code == 200
            answered.append(response.json()["id"])
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL  # killed right after the last answer

    stored = await stored_messages(Config(storage=StorageConfig(data_dir=str(tmp_path / "data"))))
    assert [m.id for m in stored] == answered

    second = await start_gateway(env)
    hub = MqttClient(second.mqtt_port)
    try:
        assert not (await hub.connect()).is_failure
        await hub.subscribe("pushgate/my-topic/message")
        delivered = [json.loads((await hub.receive()).payload) for _ in answered]
    finally:
        hub.close()
        await second.stop(signal.SIGTERM)
    assert sorted(e["id"] for e in delivered) == sorted(answered)
    assert {e["message"] for e in delivered} == {f"reading {i}" for i in range(BURST)}


async def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    env = gateway_env(tmp_path / "data")
    gateway = await start_gateway(env)
    assert await gateway.stop(signal.SIGTERM) == 0
    assert any("pushgate stopping" in line for line in gateway.log)
    assert not any("Traceback" in line for line in gateway.log), "".join(gateway.log)


async def test_every_pubacked_push_survives_sigkill_right_after_its_puback(tmp_path: Path) -> None:
    """Issue 3, acceptance 5: a PUBACK means "on disk". Rounds of a pipelined QoS 1 burst, each killed with
    SIGKILL the moment a PUBACK is read (a different one each round); every acknowledged push is stored."""
    env = gateway_env(tmp_path / "data", PUSHGATE_LOG_LEVEL="INFO")
    assert (await pushgate(env, "topic", "create", "sensor"))[0] == 0
    acknowledged: set[str] = set()
    for round_number, kill_after in enumerate((1, 7, 19, 33, 50)):
        gateway = await start_gateway(env)
        device = await RawClient.open(gateway.mqtt_port)
        try:
            await device.connect(f"burst-{round_number}")
            texts = {packet_id: f"round {round_number} reading {packet_id}" for packet_id in range(1, 61)}
            await device.send(
                b"".join(
                    publish_packet("pushgate/sensor/push", t.encode(), qos=1, packet_id=i)
                    for i, t in texts.items()
                )
            )
            for _ in range(kill_after):
                puback = await device.read_packet()
                assert puback is not None and puback.type == 4
                acknowledged.add(texts[int.from_bytes(puback.body[:2], "big")])
            journal = [
                pid
                for pid, module in helpers(gateway.proc.pid).items()
                if module == "gateway.storage.journal"
            ]
            gateway.proc.kill()  # SIGKILL, right after the PUBACK was read
        finally:
            device.close()
            await gateway.stop(signal.SIGKILL)
        assert len(journal) == 1  # the pushes were committed by the journal process
        await until(functools.partial(_ended, journal[0]), "the journal process to end with the gateway")
        stored = {
            m.message
            for m in await stored_messages(Config(storage=StorageConfig(data_dir=str(tmp_path / "data"))))
        }
        missing = acknowledged - stored
        assert not missing, f"round {round_number}: acknowledged but not stored: {sorted(missing)[:5]}"
    assert len(acknowledged) == 1 + 7 + 19 + 33 + 50


async def _ended(pid: int) -> bool:
    return not running(pid)
