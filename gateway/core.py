"""The routing core as one object: storage, access, topics, the publish pipeline, the outbox and webhooks.

Edges receive a started ``Gateway`` and call ``publish``, ``access`` and ``topics``; they never touch the
database. ``Gateway.running(config)`` owns the background tasks (group-commit writer, outbox, maintenance)
and stops them in reverse order: on exit queued writes are committed before the engine is disposed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from typing import Any

from gateway import retention
from gateway.access import Access
from gateway.actions import Actions
from gateway.admin import Admin
from gateway.channels.mqtt import MqttChannel, MqttEgress
from gateway.channels.webhook import UrlGuard
from gateway.config import Config
from gateway.devices import Devices
from gateway.homeassistant import HomeAssistant
from gateway.outbox import Outbox
from gateway.publish import Publisher
from gateway.ratelimit import RateLimiter
from gateway.receipts import Receipts
from gateway.storage import database
from gateway.storage.models import utcnow
from gateway.targets import DeviceTargets
from gateway.topics import TopicDirectory
from gateway.webhooks import Webhooks
from gateway.writer import GroupCommitWriter

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

# Seconds between maintenance runs: key last-used times, ttl expiry (so an expiry is seen within this
# long of its deadline) and retention.
_MAINTENANCE_EVERY = 30.0


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.engine = database.create_engine(config.storage)
        self.sessions = database.session_factory(self.engine)
        self.topics = TopicDirectory(
            self.sessions, auto_create=config.topics.auto_create, cache_seconds=config.topics.cache_seconds
        )
        self.access = Access(self.sessions)
        self._revocation_listeners: list[Callable[[], None]] = []
        self.homeassistant = HomeAssistant(self.sessions, config.homeassistant, config.mqtt.prefix)
        self.admin = Admin(
            self.sessions, on_topic_change=self._topic_changed, on_keys_revoked=self._keys_revoked
        )
        self.receipts = Receipts(self.sessions, self.access)
        self.targets = DeviceTargets(self.sessions)
        self.devices = Devices(self.sessions, self.targets)
        self.writer = GroupCommitWriter(self.sessions, config.outbox.write_queue_size)
        self.outbox = Outbox(self.sessions, config.outbox)
        self.rate_limiter = RateLimiter(config.ratelimit)
        self.publisher = Publisher(
            topics=self.topics,
            access=self.access,
            limits=config.limits,
            writer=self.writer,
            outbox=self.outbox,
            limiter=self.rate_limiter,
            targets=self.targets,
            on_accepted=self.homeassistant.actions_used,
        )
        self.publish = self.publisher.publish
        hooks = config.webhooks
        # The gateway's own listen addresses are refused as webhook targets unless allowed (SSRF).
        guard = UrlGuard(hooks.allowed_hosts, listen_hosts=(config.http.host, config.mqtt.host))
        self.webhooks = Webhooks(self.sessions, hooks, guard, config.storage.data_dir)
        self.outbox.add_channel(
            self.webhooks.channel, broadcast=False, retry=self.webhooks.retry, concurrency=hooks.concurrency
        )
        self.actions = Actions(
            self.sessions, self.access, self.outbox, self.webhooks, homeassistant=self.homeassistant
        )
        self.outbox.on_delivered(self.actions.delivered)

    def attach_mqtt(self, egress: MqttEgress) -> None:
        """Enable the MQTT channel; ``broker/`` provides the egress, the composition root wires it."""
        self.outbox.add_channel(MqttChannel(self.config.mqtt.prefix, egress))
        self.homeassistant.attach(egress)

    def _topic_changed(self, name: str) -> None:
        self.topics.invalidate(name)
        self.homeassistant.topic_changed(name)

    def on_keys_revoked(self, listener: Callable[[], None]) -> None:
        """Register an edge that must re-check live sessions when keys are revoked (the broker)."""
        self._revocation_listeners.append(listener)

    def _keys_revoked(self) -> None:
        for listener in self._revocation_listeners:
            listener()

    def start_delivery(self) -> None:
        """Let the outbox work, once the composition root has attached every channel."""
        self.outbox.open()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, config: Config) -> AsyncIterator[Gateway]:
        gateway = cls(config)
        try:
            await database.upgrade(gateway.engine)
            await gateway.targets.load()
            await gateway.webhooks.start()
            writer = _owned(gateway.writer.run(), "group-commit-writer")
            outbox = _owned(gateway.outbox.run(), "outbox")
            maintenance = _owned(gateway._maintenance(), "maintenance")
            discovery = _owned(gateway.homeassistant.run(), "homeassistant-discovery")
            try:
                yield gateway
            finally:
                gateway.homeassistant.stop()
                maintenance.cancel()
                gateway.outbox.stop()
                await gateway.writer.stop()
                await asyncio.wait([writer, outbox, maintenance, discovery])
                await gateway.webhooks.close()
                await gateway.access.flush_last_used()
        finally:
            await gateway.engine.dispose()

    async def prune(self, now: datetime | None = None) -> int:
        """Delete messages past the retention; ``now`` is a parameter so tests need not wait."""
        return await retention.prune(self.sessions, self.config.storage.retention_days, now or utcnow())

    async def _maintenance(self) -> None:
        while True:
            try:
                await self.access.flush_last_used()
                expired = await self.actions.expire_due()
                if expired:
                    log.info("expired %d unread messages past their ttl", expired)
                pruned = await self.prune()
                if pruned:
                    log.info(
                        "retention: deleted %d messages older than %d days",
                        pruned,
                        self.config.storage.retention_days,
                    )
            except Exception:
                log.exception("maintenance failed; trying again later")
            await asyncio.sleep(_MAINTENANCE_EVERY)


def _owned(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A background task of the core: awaited by ``running`` at exit; a crash is logged at once."""

    def _report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped with an error", name, exc_info=task.exception())

    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_report)
    return task
