"""The publish pipeline every edge calls: look up, authorise, rate-limit, validate, store durably, hand to
the outbox.

``publish`` returns only after the message, its receipt and its delivery rows are committed
(``GroupCommitWriter``), so an edge's success answer always means "on disk". There is one delivery row per
broadcast channel (MQTT) and one per registered device the message goes to (``gateway.targets``).
"""

from __future__ import annotations

import logging

from gateway.access import Access, Principal
from gateway.channels import Job
from gateway.config import LimitsConfig
from gateway.envelope import envelope
from gateway.ids import new_id
from gateway.outbox import Outbox
from gateway.ratelimit import RateLimiter
from gateway.request import PushRequest, PushResult
from gateway.storage.models import Delivery, Message, Receipt, utcnow
from gateway.targets import DeviceTargets
from gateway.topics import TopicDirectory
from gateway.validation import validate
from gateway.writer import GroupCommitWriter

__all__ = ["Publisher"]

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self,
        *,
        topics: TopicDirectory,
        access: Access,
        limits: LimitsConfig,
        writer: GroupCommitWriter,
        outbox: Outbox,
        limiter: RateLimiter,
        targets: DeviceTargets,
    ) -> None:
        self._topics = topics
        self._access = access
        self._limits = limits
        self._writer = writer
        self._outbox = outbox
        self._limiter = limiter
        self._targets = targets

    async def publish(self, req: PushRequest, principal: Principal | None = None) -> PushResult:
        """Store and route one notification; ``principal`` is given when the edge authenticated already."""
        topic = await self._topics.get(req.topic)
        if principal is None:
            principal = await self._access.authenticate(req.credential)
        self._access.check(principal, topic)
        rate = self._limiter.acquire(principal, req.client_addr)  # a refused push stores nothing
        valid = validate(req, self._limits)

        now = utcnow()
        message = Message(
            id=new_id(),
            topic_id=topic.id,
            title=valid.title,
            message=valid.message,
            priority=valid.priority,
            tags=valid.tags,
            click_url=valid.click_url,
            icon_url=valid.icon_url,
            image_url=valid.image_url,
            actions=valid.actions,
            callback_url=valid.callback_url,
            sound=valid.sound,
            ttl=valid.ttl,
            source=req.source,
            created_at=now,
        )
        receipt = Receipt(
            id=new_id(), message_id=message.id, topic_id=topic.id, created_at=now, updated_at=now
        )
        deliveries = [
            Delivery(
                message_id=message.id,
                channel=name,
                event="",
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
            for name in self._outbox.channels
        ]
        devices = self._targets.for_topic(topic, self._outbox.lanes)
        deliveries += [
            Delivery(
                message_id=message.id,
                channel=target.channel,
                target=target.device_id,
                event="",
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
            for target in devices
        ]
        await self._writer.write([message, receipt, *deliveries])

        payload = envelope(message, receipt.id, topic.name)
        self._outbox.submit(
            [Job(d.id, d.channel, message.id, topic.name, payload, "", d.target) for d in deliveries]
        )
        subscribers = len(devices)
        for channel in self._outbox.channels.values():
            subscribers += await channel.subscribers(topic.name)
        log.info("accepted %s on %s from %s (%s)", message.id, topic.name, req.source, principal)
        return PushResult(message.id, receipt.id, topic.name, now, subscribers, rate)
