"""Revoking a key through the running server disconnects its MQTT clients at once, not at the next audit."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx
import pytest

from gateway.admin import Admin
from gateway.config import Config
from tests.conftest import TIMEOUT, MqttClient, Server


@pytest.fixture
def config(config: Config, tmp_path: Path) -> Config:
    # An audit interval far beyond the test's timeout: only the immediate path can pass the test.
    return dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, key_audit_interval=3600.0))


@pytest.mark.parametrize("how", ["revoke the key", "delete the topic"])
async def test_api_revocation_disconnects_at_once(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client, mqtt_clients, how: str
) -> None:
    owner = await admin.create_user("alice")
    auth = {"Authorization": f"Bearer {owner.secret}"}
    topic = (await http.post("/api/topics", json={"name": "door", "is_private": True}, headers=auth)).json()
    key = (await http.post(f"/api/topics/{topic['id']}/keys", json={"label": "esp32"}, headers=auth)).json()

    device: MqttClient = await make_client(password=key["key"])
    disconnected = asyncio.Event()
    loop = asyncio.get_running_loop()
    device.client.on_disconnect = lambda *_: loop.call_soon_threadsafe(disconnected.set)
    device.client.reconnect_delay_set(60, 60)

    if how == "revoke the key":
        response = await http.delete(f"/api/topics/{topic['id']}/keys/{key['id']}", headers=auth)
    else:
        response = await http.delete(f"/api/topics/{topic['id']}", headers=auth)
    assert response.status_code == 200
    await asyncio.wait_for(disconnected.wait(), TIMEOUT)

    again = MqttClient(server.mqtt_port, password=key["key"])
    mqtt_clients.append(again)
    assert (await again.connect()).is_failure
