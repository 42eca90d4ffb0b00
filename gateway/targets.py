"""Which registered devices a message on a topic goes to: the fan-out of the publish pipeline.

A device receives the topics it named at registration, or, when it named none, every topic its user owns
(``gateway.devices``). Access is checked here, at send time, not only at registration: a topic that
turned private since reaches only its owner's devices.

The index lives in memory so a publish does not query the devices table: it is loaded at start and kept
current by ``gateway.devices`` (register, delete) and by the channels (a device the push service no longer
knows is marked expired). Devices change only through this process's API, so nothing else can make it
stale. It also holds each browser's Web Push subscription, which the Web Push channel reads for every
attempt (``webpush_subscription``): the subscription as registered now, without a query per attempt.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.access import TopicInfo
from gateway.storage.models import Device

__all__ = ["CHANNEL_OF_PLATFORM", "DeviceTargets", "Target", "WebPushKeys"]

# The delivery channel (outbox lane name) that serves each device platform.
CHANNEL_OF_PLATFORM = {"web": "webpush", "ios": "expo", "android": "expo"}


@dataclass(frozen=True, slots=True)
class Target:
    channel: str
    device_id: str


@dataclass(frozen=True, slots=True)
class WebPushKeys:
    """A browser's subscription: where to POST, and the keys to encrypt to (base64url, as registered)."""

    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True, slots=True)
class _Entry:
    user_id: str
    channel: str
    topics: tuple[str, ...]
    webpush: WebPushKeys | None


class DeviceTargets:
    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self._sessions = sessions
        self._devices: dict[str, _Entry] = {}
        self._by_owner: dict[str, set[str]] = defaultdict(set)  # user id -> devices that named no topic
        self._by_topic: dict[str, set[str]] = defaultdict(set)  # topic name -> devices that named it

    async def load(self) -> None:
        """Read every active device; called once at start."""
        async with self._sessions() as session:
            devices = await session.scalars(select(Device).where(Device.status == "active"))
            for device in devices:
                self.put(device)

    def put(self, device: Device) -> None:
        """Index a device as it now is (registered, updated or expired)."""
        self.remove(device.id)
        if device.status != "active":
            return
        keys = None
        if device.webpush_endpoint and device.webpush_p256dh and device.webpush_auth:
            keys = WebPushKeys(device.webpush_endpoint, device.webpush_p256dh, device.webpush_auth)
        channel = CHANNEL_OF_PLATFORM[device.platform]
        entry = _Entry(device.user_id, channel, tuple(device.topics or ()), keys)
        self._devices[device.id] = entry
        if entry.topics:
            for name in entry.topics:
                self._by_topic[name].add(device.id)
        else:
            self._by_owner[entry.user_id].add(device.id)

    def remove(self, device_id: str) -> None:
        entry = self._devices.pop(device_id, None)
        if entry is None:
            return
        buckets = (
            [self._by_topic[n] for n in entry.topics] if entry.topics else [self._by_owner[entry.user_id]]
        )
        for bucket in buckets:
            bucket.discard(device_id)

    def webpush_subscription(self, device_id: str) -> WebPushKeys | None:
        """The browser's subscription as registered now; ``None`` once the device is deleted or no longer
        active (expired), or when it has no subscription."""
        entry = self._devices.get(device_id)
        return entry.webpush if entry is not None else None

    def for_topic(self, topic: TopicInfo, channels: Iterable[str]) -> list[Target]:
        """The devices a message on ``topic`` goes to, limited to the delivery channels attached."""
        owned = self._by_owner.get(topic.owner_id, ()) if topic.owner_id else ()
        named = self._by_topic.get(topic.name, ())
        if not owned and not named:  # most pushes, on a topic without devices: nothing to build
            return []
        attached = set(channels)
        found: list[Target] = []
        for device_id in (*owned, *named):
            entry = self._devices[device_id]
            if entry.channel not in attached:
                continue
            # Named topics were checked at registration; check again now (``Access.may_access``'s rule).
            if entry.topics and topic.is_private and entry.user_id != topic.owner_id:
                continue
            found.append(Target(entry.channel, device_id))
        return found
