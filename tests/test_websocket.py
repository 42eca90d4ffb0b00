"""The optional WebSocket listener: MQTT over WebSockets works; its frame limit matches max_packet_size.

Driven with the ``websockets`` client library: paho-mqtt 2.2's WebSocket handshake times out against this
listener (noted in the issue; the ``websockets`` client and the listener agree on RFC 6455).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import websockets

from tests.brokers import LIMITS, connect_packet, publish_packet, pushgate_broker
from tests.conftest import TIMEOUT, MqttClient


async def test_mqtt_over_websockets(tmp_path: Path) -> None:
    async with pushgate_broker(tmp_path, websocket_enabled=True, websocket_port=0) as broker:
        url = f"ws://127.0.0.1:{broker.broker.listener_port('ws')}/mqtt"
        tcp = MqttClient(broker.port, username=broker.alice[0], password=broker.alice[1])
        try:
            assert not (await tcp.connect()).is_failure
            assert await tcp.subscribe("home/ws") == 1
            async with websockets.connect(url, subprotocols=["mqtt"], open_timeout=TIMEOUT) as ws:
                await ws.send(connect_packet("ws-client", username=broker.alice[0], password=broker.alice[1]))
                assert await ws.recv() == b"\x20\x02\x00\x00"  # CONNACK accepted
                await ws.send(publish_packet("home/ws", b"over websockets"))
                assert (await tcp.receive()).payload == b"over websockets"

                oversized = publish_packet("home/ws", b"x" * (LIMITS["max_packet_size"] * 2))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.send(oversized)
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
            await tcp.publish("home/ws", "tcp still served", qos=1)
            assert (await tcp.receive()).payload == b"tcp still served"
        finally:
            tcp.close()
