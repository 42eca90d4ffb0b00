"""The routing core without its edges: publish, group commit, retention."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from broker.server import PushgateBroker
from gateway.config import Config
from gateway.core import Gateway
from gateway.request import PushRequest
from gateway.storage.models import Delivery, Message, Receipt


async def count(gw: Gateway, model: type) -> int:
    async with gw.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_concurrent_publishes_share_commits(config: Config) -> None:
    async with Gateway.running(config) as gw:
        await gw.admin.create_topic("t")
        results = await asyncio.gather(
            *(gw.publish(PushRequest(topic="t", message=f"m{i}", source="test")) for i in range(50))
        )
        assert len({r.id for r in results}) == 50
        assert await count(gw, Message) == 50 and await count(gw, Receipt) == 50
        assert gw.writer.commits < 50, "concurrent publishes are grouped into fewer transactions"


async def test_retention_prunes_old_messages_with_their_rows(config: Config) -> None:
    async with Gateway.running(config) as gw:
        gw.attach_mqtt(PushgateBroker(gw, config.mqtt))  # real broker, not started: rows stay pending
        await gw.admin.create_topic("t")
        result = await gw.publish(PushRequest(topic="t", message="old", source="test"))
        assert await count(gw, Delivery) == 1
        days = config.storage.retention_days
        assert await gw.prune(now=result.timestamp + timedelta(days=days) - timedelta(seconds=1)) == 0
        assert await gw.prune(now=result.timestamp + timedelta(days=days, seconds=1)) == 1
        assert (await count(gw, Message), await count(gw, Receipt), await count(gw, Delivery)) == (0, 0, 0)
