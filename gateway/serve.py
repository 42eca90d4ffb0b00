"""The composition root: one process, one event loop, the core plus the MQTT broker plus the HTTP bridge.

``serve`` builds the core, starts the broker (if enabled), attaches it as the MQTT channel, then serves
the bridge on Hypercorn until ``shutdown_trigger`` completes. Shutdown runs in reverse: HTTP stops taking
requests and lets in-flight ones finish (``graceful_timeout``), the broker stops, queued writes are
committed, and pending deliveries stay in the outbox for the next start. Only the CLI installs signal
handlers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from amqtt.errors import BrokerError
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from broker.server import PushgateBroker
from gateway.clock import Clock
from gateway.config import Config
from gateway.core import Gateway
from gateway.errors import ListenError
from http_bridge.app import create_app

__all__ = ["Endpoints", "serve"]

log = logging.getLogger("pushgate")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the running gateway listens; ports are the bound ones (useful when configured as 0)."""

    http: str | None
    mqtt: str | None


def _bind_http(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def serve(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    on_ready: Callable[[Endpoints], None] | None = None,
    clock: Clock | None = None,
) -> None:
    stop = shutdown_trigger or asyncio.Event().wait
    async with Gateway.running(config, clock=clock) as gw:
        broker: PushgateBroker | None = None
        if config.mqtt.enabled:
            broker = PushgateBroker(gw, config.mqtt)
            try:
                await broker.start()
            except BrokerError as exc:
                where = f"{config.mqtt.host}:{config.mqtt.port}"
                raise ListenError(
                    f"cannot listen for MQTT on {where} ({exc.__cause__ or exc}); "
                    "stop the other server (a system mosquitto?) or set [mqtt] port / PUSHGATE_MQTT_PORT",
                ) from exc
            gw.attach_mqtt(broker)
        gw.start_delivery()
        try:
            try:
                http_sock = _bind_http(config.http.host, config.http.port) if config.http.enabled else None
            except OSError as exc:
                raise ListenError(
                    f"cannot listen for HTTP on {config.http.host}:{config.http.port} ({exc.strerror}); "
                    "stop the other server or set [http] port / PUSHGATE_HTTP_PORT",
                ) from exc
            endpoints = Endpoints(
                http=_url("http", config.http.host, http_sock.getsockname()[1]) if http_sock else None,
                mqtt=_url("mqtt", config.mqtt.host, broker.port) if broker else None,
            )
            log.info("pushgate ready: http=%s mqtt=%s", endpoints.http or "off", endpoints.mqtt or "off")
            if on_ready is not None:
                on_ready(endpoints)
            if http_sock is None:
                await stop()
            else:
                hconfig = HypercornConfig()
                hconfig.bind = [f"fd://{http_sock.detach()}"]  # Hypercorn owns and closes the socket now
                hconfig.graceful_timeout = config.http.graceful_timeout
                hconfig.accesslog = None
                hconfig.errorlog = None  # Hypercorn's records reach the root logger once, formatted as ours
                await hypercorn_serve(create_app(gw), hconfig, shutdown_trigger=stop, mode="asgi")
        finally:
            if broker is not None:
                await broker.shutdown()
        log.info("pushgate stopping: committing queued writes; pending deliveries stay in the outbox")
