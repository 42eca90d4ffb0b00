"""The protocol handler pushgate's broker uses for every client connection (amqtt 0.12.1 subclass)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_0, QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import OUTGOING
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.session import IncomingApplicationMessage, OutgoingApplicationMessage, Session

from broker.framing import PacketSizeGuard

if TYPE_CHECKING:
    from broker.server import PushgateBroker

__all__ = ["IngestProtocolHandler"]

log = logging.getLogger(__name__)


class IngestProtocolHandler(BrokerProtocolHandler):
    """Per-connection protocol handling with pushgate's ingest and upstream's holes closed."""

    def __init__(self, broker: PushgateBroker, max_packet_size: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._broker = broker
        self._max_packet_size = max_packet_size

    def attach(self, session: Session, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """Extends ``ProtocolHandler.attach``: every packet after CONNECT passes a size check (upstream had
        no maximum, so one client could make the broker buffer any amount)."""
        super().attach(session, PacketSizeGuard(reader, self._max_packet_size), writer)

    def handle_read_timeout(self) -> None:
        """Replaces ``BrokerProtocolHandler.handle_read_timeout`` (a no-op upstream, so keep-alive was never
        enforced and a silent client's will never published): the connection is closed as abnormal."""
        log.info(
            "client %s silent past its keep-alive: disconnecting", self.session and self.session.client_id
        )
        if self.reader is not None:
            self.reader.feed_eof()

    async def handle_publish(self, publish_packet: PublishPacket) -> None:
        """Replaces ``ProtocolHandler.handle_publish`` for QoS 0 and 1 pushes on ``<prefix>/<topic>/push``.

        Upstream queues the message and sends PUBACK at once, before anything is stored. Here the core
        commits the message first, then the PUBACK goes out, so a device that got its PUBACK never has
        to send again. Every other packet takes the upstream path.
        """
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

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        """Replaces ``ProtocolHandler._handle_qos1_message_flow`` for outgoing messages.

        Upstream waits 5 s for the PUBACK and then, or on disconnect, drops the message from the session's
        in-flight set, so nothing is redelivered when a persistent session reconnects (MQTT-4.4.0-1). Here
        the message stays in flight until its PUBACK arrives, however long that takes; a reconnect resends
        it with DUP set (``ProtocolHandler._retry_deliveries``).
        """
        if app_message.direction != OUTGOING or not isinstance(app_message, OutgoingApplicationMessage):
            await super()._handle_qos1_message_flow(app_message)
            return
        if self.session is None or app_message.packet_id is None:
            raise AMQTTError("outgoing QoS 1 message without a session or packet id")
        packet_id = app_message.packet_id
        self.session.inflight_out[packet_id] = app_message
        retry = app_message.publish_packet is not None
        publish_packet = app_message.build_publish_packet(dup=retry)
        waiter: asyncio.Future[PubackPacket] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        try:
            await self._send_packet(publish_packet)
            app_message.publish_packet = publish_packet
            app_message.puback_packet = await waiter
        finally:
            self._puback_waiters.pop(packet_id, None)
        self.session.inflight_out.pop(packet_id, None)
