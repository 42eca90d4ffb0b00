"""The protocol handler pushgate's broker uses for every client connection."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from amqtt.mqtt.constants import QOS_0, QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket

if TYPE_CHECKING:
    from broker.server import PushgateBroker

__all__ = ["IngestProtocolHandler"]


class IngestProtocolHandler(BrokerProtocolHandler):
    """Hands device pushes to the core before acknowledging them.

    Replaces ``ProtocolHandler.handle_publish`` (amqtt 0.12.1) for QoS 0 and 1 PUBLISH packets on
    ``<prefix>/<topic>/push``: upstream queues the message and sends PUBACK at once, before anything is
    stored. Here the core commits the message first, then the PUBACK goes out, so a device that got its
    PUBACK never has to send again. Every other packet takes the upstream path.
    """

    def __init__(self, broker: PushgateBroker, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._broker = broker

    async def handle_publish(self, publish_packet: PublishPacket) -> None:
        qos = publish_packet.qos
        topic = publish_packet.topic_name
        if qos not in (QOS_0, QOS_1) or topic is None or not self._broker.is_ingest_topic(topic):
            await super().handle_publish(publish_packet)
            return
        assert self.session is not None, "a handler reads packets only while attached"
        # Upstream cancels packet Tasks when the connection closes (a QoS 0 PUBLISH is often followed
        # by DISCONNECT at once); a push that was read completes anyway, owned by the broker.
        work = self._broker.start_ingest(self.session, topic, bytes(publish_packet.data or b""))
        settled = await asyncio.shield(work)
        if qos == QOS_1 and settled:
            packet_id = publish_packet.variable_header.packet_id if publish_packet.variable_header else None
            if packet_id is not None:
                await self._send_packet(PubackPacket.build(packet_id))
