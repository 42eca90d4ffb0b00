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
from gateway.attachments import Attachments
from gateway.autorevoke import AutoRevoker
from gateway.channels.expo import ExpoChannel
from gateway.channels.mqtt import MqttChannel, MqttEgress
from gateway.channels.webhook import UrlGuard
from gateway.channels.webpush import WebPushChannel
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.devices import Devices
from gateway.emergency import Emergencies
from gateway.expo_api import ExpoApi
from gateway.expo_receipts import ExpoReceipts
from gateway.homeassistant import HomeAssistant
from gateway.instapush import Instapush
from gateway.outbox import Outbox
from gateway.publish import Publisher
from gateway.pushover import Applications, MonthlyQuota
from gateway.ratelimit import RateLimiter
from gateway.receipts import Receipts
from gateway.storage import database
from gateway.storage.journal import Journal
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
    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        clock = clock or SystemClock()
        self.config = config
        self._maintenance_stop = asyncio.Event()
        self.engine = database.create_engine(config.storage)
        self.sessions = database.session_factory(self.engine)
        # The push path and the outbox write in one hand-off per transaction (``gateway.storage.journal``).
        self.journal = Journal(self.engine, config.storage if database.has_own_file(config.storage) else None)
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
        self.writer = GroupCommitWriter(self.journal, config.outbox.write_queue_size)
        self.outbox = Outbox(self.sessions, self.journal, config.outbox)
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
        push = config.webpush
        listen = (config.http.host, config.mqtt.host)
        self.webpush = WebPushChannel(
            self.sessions,
            push,
            config.storage.data_dir,
            UrlGuard(push.allowed_hosts, listen),
            self.devices.expire,
            self.targets.webpush_subscription,
        )
        self.outbox.add_channel(
            self.webpush, broadcast=False, retry=self.webpush.retry, concurrency=self.webpush.jobs_at_once
        )
        self.actions = Actions(
            self.sessions, self.access, self.outbox, self.webhooks, homeassistant=self.homeassistant
        )
        self.outbox.on_delivered(self.actions)
        # Phones through Expo; ``clock`` times the receipt checks (a parameter, so tests need not wait).
        self.expo: ExpoChannel | None = None
        self.expo_receipts: ExpoReceipts | None = None
        if config.expo.enabled:
            self._expo_api = ExpoApi(config.expo)
            self.expo_receipts = ExpoReceipts(
                self.sessions,
                self._expo_api,
                self.outbox,
                self.devices,
                config.expo,
                clock.now,
                config.outbox.poll_interval,
            )
            self.expo = ExpoChannel(
                self.sessions, self._expo_api, self.devices, config.expo, clock.now, self.expo_receipts.wake
            )
            self.outbox.add_channel(
                self.expo, broadcast=False, retry=self.expo.retry, concurrency=self.expo.workers
            )
        # Pushover: attachments, the monthly quota and emergency re-sending (``clock``: tests pass theirs).
        pushover = config.pushover
        self.attachments = Attachments(self.sessions, config.storage.data_dir, pushover.attachment_max_bytes)
        self.pushover_quota = MonthlyQuota(self.sessions, pushover.monthly_limit)
        self.pushover_apps = Applications(self.sessions, self.access, self.targets)
        self.emergencies = Emergencies(self.sessions, self.access, self.outbox, self.targets, clock)
        self.actions.on_action(self.emergencies.acknowledge)
        self.instapush = Instapush(self.sessions, self.access, self.admin, self.publish, config.limits)
        self.auto_revoke: AutoRevoker | None = None
        if config.ratelimit.auto_revoke:
            self.auto_revoke = AutoRevoker(
                config.ratelimit,
                sessions=self.sessions,
                admin=self.admin,
                publish=self.publish,
                webhooks=self.webhooks,
                outbox=self.outbox,
            )
            self.rate_limiter.on_key_refused(self.auto_revoke.strike)

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
    async def running(cls, config: Config, *, clock: Clock | None = None) -> AsyncIterator[Gateway]:
        gateway = cls(config, clock=clock)
        try:
            await database.upgrade(gateway.engine)
            await gateway.targets.load()
            await gateway.webhooks.start()
            await gateway.webpush.start()
            writer = _owned(gateway.writer.run(), "group-commit-writer")
            outbox = _owned(gateway.outbox.run(), "outbox")
            maintenance = _owned(gateway._maintenance(), "maintenance")
            tasks = [writer, outbox, maintenance]
            if gateway.expo_receipts is not None:
                tasks.append(_owned(gateway.expo_receipts.run(), "expo-receipts"))
            tasks.append(_owned(gateway.emergencies.run(), "emergencies"))
            tasks.append(_owned(gateway.homeassistant.run(), "homeassistant-discovery"))
            try:
                yield gateway
            finally:
                gateway.homeassistant.stop()
                if gateway.auto_revoke is not None:
                    await gateway.auto_revoke.close()
                gateway._maintenance_stop.set()
                gateway.emergencies.stop()
                if gateway.expo_receipts is not None:
                    gateway.expo_receipts.stop()
                gateway.outbox.stop()
                await gateway.writer.stop()
                await asyncio.wait(tasks)
                if gateway.expo is not None:
                    await gateway.expo.close()
                    await gateway._expo_api.close()
                await gateway.webhooks.close()
                await gateway.webpush.close()
                await gateway.access.flush_last_used()
        finally:
            await gateway.journal.close()
            await gateway.engine.dispose()

    async def prune(self, now: datetime | None = None) -> int:
        """Delete messages past the retention; ``now`` is a parameter so tests need not wait."""
        return await retention.prune(self.sessions, self.config.storage.retention_days, now or utcnow())

    async def _maintenance(self) -> None:
        """Runs until ``_maintenance_stop`` is set; it ends between passes, never mid-query."""
        while not self._maintenance_stop.is_set():
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._maintenance_stop.wait(), _MAINTENANCE_EVERY)


def _owned(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A background task of the core: awaited by ``running`` at exit; a crash is logged at once."""

    def _report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped with an error", name, exc_info=task.exception())

    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_report)
    return task
