"""Two brokers behind one interface: a behaviour test runs on pushgate's broker and on stock amqtt 0.12.1.

Both have the same users: ``alice`` may use every topic (pushgate: a user token; stock: a password-file
user with an all-topics ACL), ``bob`` only ``pushgate/b/...`` (pushgate: a key of topic ``b``; stock:
an ACL). A test of an upstream defect carries ``@pytest.mark.stock_defect("…")``: its stock run is a strict
xfail, so the suite keeps showing the test is red on stock amqtt and green on pushgate's broker.

Also a raw-socket MQTT 3.1.1 client for what paho will not do (never send CONNECT, speak MQTT 5, withhold
a PUBACK, go silent past the keep-alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import struct
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from amqtt.broker import Broker

from broker.server import PushgateBroker
from gateway.config import Config, HomeAssistantConfig, LogConfig, MqttConfig, StorageConfig
from gateway.core import Gateway
from tests.conftest import MqttClient

WAIT = 10.0  # seconds for anything that should happen
NEGATIVE_WAIT = 4.0  # seconds to wait for something a defect makes happen (or not)

# Limits both brokers get where they have the setting, small so tests reach them quickly.
LIMITS = {"connect_timeout": 1.0, "max_packet_size": 2048, "max_queued_messages": 5, "max_connections": 6}


@dataclass
class BrokerUnderTest:
    kind: str  # "pushgate" or "stock"
    port: int
    broker: Broker
    alice: tuple[str, str]
    bob: tuple[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def session_count(self) -> int:
        return len(self.broker.sessions)


@contextlib.asynccontextmanager
async def pushgate_broker(tmp_path: Path, **mqtt: Any) -> AsyncIterator[BrokerUnderTest]:
    config = Config(
        storage=StorageConfig(data_dir=str(tmp_path / "data")),
        mqtt=MqttConfig(port=0, **(LIMITS | mqtt)),
        # compared with stock amqtt message for message: no Home Assistant configs under a client's "#"
        homeassistant=HomeAssistantConfig(discovery=False),
        log=LogConfig(level="WARNING"),
    )
    async with Gateway.running(config) as gw:
        alice = await gw.admin.create_user("alice")
        await gw.admin.create_topic("a", private=True, owner="alice")
        await gw.admin.create_topic("b", private=True)
        await gw.admin.create_topic("pub")
        bob_key = await gw.admin.create_key("b", label="bob")
        broker = PushgateBroker(gw, config.mqtt)
        await broker.start()
        gw.attach_mqtt(broker)
        gw.start_delivery()
        try:
            yield BrokerUnderTest(
                "pushgate", broker.port, broker, ("alice", alice.secret), ("bob", bob_key.secret)
            )
        finally:
            await broker.shutdown()


@contextlib.asynccontextmanager
async def stock_broker(
    tmp_path: Path, *, anonymous: bool = False, **mqtt: Any
) -> AsyncIterator[BrokerUnderTest]:
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    limits = LIMITS | mqtt
    hasher = PasswordHash((Argon2Hasher(),))
    passwords = tmp_path / "passwd"
    passwords.write_text(f"alice:{hasher.hash('alice-pw')}\nbob:{hasher.hash('bob-pw')}\n")
    if anonymous:
        plugins: dict[str, Any] = {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
        }
    else:
        acl = {"alice": ["#"], "bob": ["pushgate/b/#"]}
        plugins = {
            "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(passwords)},
            "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {"acl": acl, "publish_acl": acl},
        }
    broker = Broker(
        {
            "listeners": {
                "default": {
                    "type": "tcp",
                    "bind": "127.0.0.1:0",
                    "max_connections": limits["max_connections"],
                }
            },
            "plugins": plugins,
        }
    )
    await broker.start()
    port = broker._servers["default"].instance.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield BrokerUnderTest("stock", port, broker, ("alice", "alice-pw"), ("bob", "bob-pw"))
    finally:
        await broker.shutdown()
        # Stock amqtt leaves server-side sockets of refused or silent connections open (the defects under
        # test); collect them now, while this loop runs, so they are not reported in the next test.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


# -- raw MQTT 3.1.1 -----------------------------------------------------------------------------------


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    header = bytearray([first])
    n = len(body)
    while True:
        byte, n = n % 128, n // 128
        header.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(header) + body


def connect_packet(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    clean: bool = True,
    keepalive: int = 60,
    will: tuple[str, bytes, int] | None = None,
    protocol: tuple[str, int] = ("MQTT", 4),
) -> bytes:
    flags = (
        (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    )
    payload = _string(client_id)
    if will is not None:
        flags |= 0x04 | (will[2] << 3)
        payload += _string(will[0]) + _string(will[1])
    if username is not None:
        payload += _string(username)
    if password is not None:
        payload += _string(password)
    variable = _string(protocol[0]) + bytes([protocol[1], flags]) + struct.pack("!H", keepalive)
    if protocol == ("MQTT", 5):
        variable += b"\x00"  # no properties
    return _packet(0x10, variable + payload)


def subscribe_packet(packet_id: int, topic: str, qos: int) -> bytes:
    return _packet(0x82, struct.pack("!H", packet_id) + _string(topic) + bytes([qos]))


def publish_packet(
    topic: str, payload: bytes, qos: int = 0, packet_id: int = 1, retain: bool = False
) -> bytes:
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return _packet(0x30 | (qos << 1) | (1 if retain else 0), body)


def puback_packet(packet_id: int) -> bytes:
    return _packet(0x40, struct.pack("!H", packet_id))


@dataclass
class Packet:
    type: int
    flags: int
    body: bytes

    @property
    def publish_topic(self) -> str:
        length = struct.unpack("!H", self.body[:2])[0]
        return self.body[2 : 2 + length].decode()

    @property
    def publish_qos(self) -> int:
        return (self.flags >> 1) & 3

    @property
    def publish_payload(self) -> bytes:
        length = struct.unpack("!H", self.body[:2])[0]
        return self.body[2 + length + (2 if self.publish_qos else 0) :]

    @property
    def publish_packet_id(self) -> int:
        length = struct.unpack("!H", self.body[:2])[0]
        return int(struct.unpack("!H", self.body[2 + length : 4 + length])[0])


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_packet(self, timeout: float = WAIT) -> Packet | None:
        """The next packet, or None when the server closed the connection."""
        async with asyncio.timeout(timeout):
            first = await self.reader.read(1)
            if not first:
                return None
            length, multiplier = 0, 1
            while True:
                byte = (await self.reader.readexactly(1))[0]
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                if not byte & 0x80:
                    break
            body = await self.reader.readexactly(length)
        return Packet(first[0] >> 4, first[0] & 0x0F, body)

    async def closed_by_server(self, timeout: float = WAIT) -> bool:
        """True once the server closes the connection (reading past anything it still sends)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(4096):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    async def connect(self, *args: Any, **kwargs: Any) -> Packet:
        await self.send(connect_packet(*args, **kwargs))
        connack = await self.read_packet()
        assert connack is not None and connack.type == 2, connack
        return connack

    def close(self) -> None:
        self.writer.close()


# -- fixtures (registered through ``pytest_plugins`` in conftest) -------------------------------------


@pytest.fixture(params=["pushgate", "stock"])
async def mqtt_broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BrokerUnderTest]:
    options = {}
    marker = request.node.get_closest_marker("broker_options")
    if marker is not None:
        options = dict(marker.kwargs)
    if request.param == "stock":
        defect = request.node.get_closest_marker("stock_defect")
        if defect is not None:
            request.applymarker(pytest.mark.xfail(strict=True, reason=f"amqtt 0.12.1: {defect.args[0]}"))
        async with stock_broker(tmp_path, **options) as broker:
            yield broker
    else:
        options.pop("anonymous", None)
        async with pushgate_broker(tmp_path, **options) as broker:
            yield broker


@pytest.fixture
def clients() -> Iterator[list[MqttClient | RawClient]]:
    made: list[MqttClient | RawClient] = []
    yield made
    for client in made:
        client.close()


async def paho(
    broker: BrokerUnderTest, clients: list, who: tuple[str, str] | None = None, **kwargs: object
) -> MqttClient:
    username, password = who if who else (None, None)
    client = MqttClient(broker.port, username=username, password=password, **kwargs)  # type: ignore[arg-type]
    clients.append(client)
    rc = await client.connect()
    assert not rc.is_failure, rc
    return client


async def raw(broker: BrokerUnderTest, clients: list) -> RawClient:
    client = await RawClient.open(broker.port)
    clients.append(client)
    return client
