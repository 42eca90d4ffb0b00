"""Shared fixtures: the real gateway (amqtt broker + Hypercorn) on ephemeral loopback ports, an admin
on its own engine (as the CLI would be, from another process), and paho-mqtt clients as devices and hubs.

Nothing of pushgate's is mocked. Waiting is done on events with a timeout, never with sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select, text

from gateway.admin import Admin
from gateway.clock import Clock
from gateway.config import Config, HttpConfig, LogConfig, MqttConfig, StorageConfig
from gateway.serve import Endpoints, serve
from gateway.storage import database
from gateway.storage.models import Message

TIMEOUT = 10.0  # seconds any single wait in a test may take before it fails

pytest_plugins = ["tests.brokers"]  # the dual-broker fixture (pushgate's broker and stock amqtt)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        storage=StorageConfig(data_dir=str(tmp_path / "data")),
        http=HttpConfig(port=0, graceful_timeout=2.0),
        mqtt=MqttConfig(port=0, key_audit_interval=0.5),
        log=LogConfig(level="WARNING"),
    )


@dataclasses.dataclass
class Server:
    endpoints: Endpoints
    config: Config

    @property
    def http_url(self) -> str:
        assert self.endpoints.http
        return self.endpoints.http

    @property
    def mqtt_port(self) -> int:
        assert self.endpoints.mqtt
        port = urlsplit(self.endpoints.mqtt).port
        assert port is not None
        return port


@pytest.fixture
async def admin(config: Config) -> AsyncIterator[Admin]:
    engine = database.create_engine(config.storage)
    await database.upgrade(engine)
    try:
        yield Admin(database.session_factory(engine))
    finally:
        await engine.dispose()


@pytest.fixture
def gateway_clock() -> Clock | None:
    """The clock the served gateway runs on; a test overrides it to move time without waiting."""
    return None


@pytest.fixture
async def server(config: Config, admin: Admin, gateway_clock: Clock | None) -> AsyncIterator[Server]:
    """``serve`` running in this test's event loop until the test ends."""
    async with served(config, gateway_clock) as running:
        yield running


@contextlib.asynccontextmanager
async def served(config: Config, clock: Clock | None = None) -> AsyncIterator[Server]:
    """``serve`` running in this test's event loop until the block ends (tests that stop and start it)."""
    stop = asyncio.Event()
    ready: asyncio.Future[Endpoints] = asyncio.get_running_loop().create_future()
    running = serve(config, shutdown_trigger=stop.wait, on_ready=ready.set_result, clock=clock)
    task = asyncio.create_task(running)
    done, _ = await asyncio.wait([task, ready], timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # serve failed to start: raise its error
    assert ready in done, "the gateway did not become ready"
    try:
        yield Server(ready.result(), config)
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        yield client


async def until(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail after TIMEOUT (a deadline, not a sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not (result := await check()):
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return result


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def user(admin: Admin, name: str) -> dict[str, str]:
    """Create a user the way the CLI does; return the headers that carry its token."""
    return bearer((await admin.create_user(name)).secret)


def assert_error(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """An error answer as the API promises it: the status, a JSON error and message, the field if named."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] and body["message"], body
    if field is not None:
        assert body["field"] == field, body
    return body  # type: ignore[no-any-return]


async def stored_messages(config: Config) -> list[Message]:
    """The messages table as a user would query it, through a fresh engine."""
    engine = database.create_engine(config.storage)
    try:
        async with database.session_factory(engine)() as session:
            return list(await session.scalars(select(Message).order_by(Message.created_at, Message.id)))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def serving(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    """``served``, with an HTTP client for it."""
    async with (
        served(config) as running,
        httpx.AsyncClient(base_url=running.http_url, timeout=TIMEOUT) as http,
    ):
        yield http


async def rows(config: Config, sql: str) -> list[tuple[Any, ...]]:
    """What ``sql`` reads from the gateway's database, through a fresh engine."""
    engine = database.create_engine(config.storage)
    try:
        async with engine.connect() as connection:
            return [tuple(row) for row in await connection.execute(text(sql))]
    finally:
        await engine.dispose()


class MqttClient:
    """A paho-mqtt client whose callbacks feed thread-safe queues the async tests await."""

    def __init__(
        self,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        clean_session: bool = True,
        will: tuple[str, bytes, int] | None = None,
    ) -> None:
        self.port = port
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            clean_session=clean_session,
        )
        if will is not None:
            self.client.will_set(will[0], will[1], will[2])
        if password is not None and username is None:
            username = "device"  # MQTT 3.1.1 has no password without a username; paho would drop it
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connack: queue.Queue[Any] = queue.Queue()
        self._suback: dict[int, queue.Queue[list[Any]]] = {}
        self._lock = threading.Lock()
        self.session_present = False
        self.client.on_connect = lambda _c, _u, flags, rc, _p: self._connack.put((rc, flags.session_present))
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = self._on_subscribe

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[Any], _p: Any) -> None:
        with self._lock:
            self._suback.setdefault(mid, queue.Queue()).put(codes)

    async def connect(self) -> Any:
        """Connect and return the CONNACK reason code (``rc.is_failure`` tells a refusal)."""
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        rc, self.session_present = await asyncio.to_thread(self._connack.get, timeout=TIMEOUT)
        return rc

    async def subscribe(self, topic: str, qos: int = 1) -> int:
        """Subscribe and return the SUBACK code: the granted QoS, or 128 for a refusal."""
        _rc, mid = self.client.subscribe(topic, qos)
        with self._lock:
            waiter = self._suback.setdefault(mid, queue.Queue())
        codes = await asyncio.to_thread(waiter.get, timeout=TIMEOUT)
        return int(codes[0].value)

    async def publish(self, topic: str, payload: str | bytes, qos: int = 0) -> None:
        """Publish; for QoS 1 return only once the broker's PUBACK arrived."""
        info = self.client.publish(topic, payload, qos)
        if qos:
            await asyncio.to_thread(info.wait_for_publish, TIMEOUT)
            assert info.is_published(), "no PUBACK within the timeout"

    async def receive(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        return await asyncio.to_thread(self.messages.get, timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_clients() -> Iterator[list[MqttClient]]:
    """Collects clients a test makes so each is disconnected at the end."""
    clients: list[MqttClient] = []
    yield clients
    for client in clients:
        client.close()


@pytest.fixture
def make_client(server: Server, mqtt_clients: list[MqttClient]) -> Any:
    async def make(*, username: str | None = None, password: str | None = None) -> MqttClient:
        client = MqttClient(server.mqtt_port, username=username, password=password)
        mqtt_clients.append(client)
        rc = await client.connect()
        assert not rc.is_failure, f"CONNACK refused: {rc}"
        return client

    return make
