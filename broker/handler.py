"""The protocol handler pushgate's broker uses for every client connection (amqtt 0.12.1 subclass).

Upstream reads each packet with five awaited reads inside a ``wait_for`` Task, handles it in a new Task,
and sends with a write lock, a drain and a re-armed keep-alive timer per packet; an outgoing QoS 1/2
message is a Task waiting for its acknowledgement. Here the reader takes whatever the socket has, cuts it
into packets in place (``broker.wire``) and handles each inline, in order; writes are appended to a
per-connection buffer flushed once per event-loop turn; acknowledgements are matched against the
session's in-flight table without waiting, and at most ``max_inflight`` QoS 1/2 messages are
unacknowledged per client (the rest wait in order, up to ``max_queued_messages``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from amqtt.adapters import (
    BufferReader,
    ReaderAdapter,
    StreamReaderAdapter,
    StreamWriterAdapter,
    WebSocketsReader,
    WriterAdapter,
)
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import ProtocolHandler
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from amqtt.session import Session
from websockets import ConnectionClosed

from broker import wire
from broker.wire import MalformedPacket, Outgoing

if TYPE_CHECKING:
    from websockets.asyncio.connection import Connection

    from broker.server import PushgateBroker
    from gateway.config import MqttConfig

__all__ = ["UNUSED_QUEUE", "IngestProtocolHandler"]

log = logging.getLogger(__name__)

_READ_SIZE = 64 * 1024  # bytes asked of the socket per read: many small packets arrive in one chunk
# A client that does not read its socket: past this many unsent bytes, QoS 0 messages to it are dropped
# (counted) and its own reading pauses until the buffer drains, so it cannot make the broker buffer
# without bound (QoS 1/2 are bounded by the in-flight window and the queue).
WRITE_BUFFER_LIMIT = 4 * 1024 * 1024
SUBSCRIBE, UNSUBSCRIBE, UNSUBACK, PINGREQ, DISCONNECT = 8, 10, 11, 12, 14
# Upstream gives every handler two queues (pending subscriptions, unsubscriptions) and every session a
# delivery queue, about 2.3 KiB each; pushgate's reader handles those packets inline and never uses them,
# so they all share this one, always empty (upstream only asks it ``empty()`` when stopping).
UNUSED_QUEUE: asyncio.Queue[Any] = asyncio.Queue()


class _Flight:
    """An outgoing QoS 1/2 message awaiting PUBACK (QoS 1) or PUBREC then PUBCOMP (QoS 2)."""

    __slots__ = ("message", "qos", "retain", "released")

    def __init__(self, message: Outgoing, qos: int, retain: bool) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.released = False  # QoS 2: PUBREC came, PUBREL sent


class _Received:
    """An incoming QoS 2 message held until its PUBREL (delivered once, MQTT 3.1.1 4.3.3 method B)."""

    __slots__ = ("topic", "data", "retain", "storing")

    def __init__(self, topic: str, data: bytes, retain: bool) -> None:
        self.topic = topic
        self.data = data
        self.retain = retain
        # A push being committed since its PUBREL: a PUBREL sent again meanwhile waits for the same commit.
        self.storing: asyncio.Future[bool] | None = None


class IngestProtocolHandler(BrokerProtocolHandler):
    """Per-connection protocol handling with pushgate's ingest, upstream's holes closed and its hot paths
    replaced. ``session.inflight_out`` holds ``_Flight`` and ``session.inflight_in`` ``_Received`` objects
    (pushgate's own code is the only reader of both)."""

    def __init__(self, broker: PushgateBroker, config: MqttConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending_subscriptions = self._pending_unsubscriptions = UNUSED_QUEUE
        self._broker = broker
        self._max_packet_size = config.max_packet_size
        self._max_inflight = config.max_inflight
        self._max_queued = config.max_queued_messages
        self._stream: asyncio.StreamReader | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._ws: Connection | None = None
        self._ws_dirty = False
        self._ws_drain: asyncio.Task[None] | None = None
        self._out: list[bytes] = []
        # made when first needed: an idle connection carries neither
        self._pending: deque[tuple[Outgoing, int, bool]] | None = None  # QoS 1/2 beyond the window
        self._acks: deque[tuple[asyncio.Future[bool] | None, bytes]] | None = None
        self._last_read = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self._closing = False
        self._pushed = False  # the last packets read held a push: ask the broker for room before reading on
        self._held = False  # waiting for that room

    # -- wiring ---------------------------------------------------------------------------------------

    def attach(self, session: Session, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """Extends ``ProtocolHandler.attach``: finds the asyncio stream or WebSocket under amqtt's adapters,
        so the reader can take whole chunks and writes can go straight to the transport."""
        super().attach(session, reader, writer)
        if isinstance(reader, StreamReaderAdapter) and isinstance(writer, StreamWriterAdapter):
            self._stream = reader._reader
            self._transport = writer._writer.transport  # type: ignore[assignment]
        elif isinstance(reader, WebSocketsReader):
            self._ws = reader._protocol

    async def start(self) -> None:
        """Replaces ``BrokerProtocolHandler.start``: the disconnect waiter exists before the reader runs
        (upstream made it afterwards, so a DISCONNECT read at once was lost and the will published)."""
        if self._disconnect_waiter is None or self._disconnect_waiter.done():
            self._disconnect_waiter = self._loop.create_future()
        await ProtocolHandler.start(self)

    async def stop(self) -> None:
        """Extends ``BrokerProtocolHandler.stop``: what is buffered is sent before the socket closes, and
        a persistent session keeps the messages still waiting for window room (in its offline queue)."""
        self._closing = True
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._flush()
        if self._ws_drain is not None and not self._ws_drain.done():
            await asyncio.gather(self._ws_drain, return_exceptions=True)
        session = self.session
        while self._pending and session is not None:
            message, qos, _retain = self._pending.popleft()
            if not session.clean_session:
                self._broker.queue_offline(session, message.topic, message.data, qos)
        await super().stop()

    # -- reading --------------------------------------------------------------------------------------

    async def _reader_loop(self) -> None:
        """Replaces ``ProtocolHandler._reader_loop``.

        Upstream awaited each packet field by field inside ``asyncio.wait_for`` (a Task and a timer per
        packet, the timer being the keep-alive) and handled every packet in a new Task. Here one read
        returns every complete packet the socket had; they are handled inline, in order (MQTT 4.6), and
        the keep-alive is one timer re-armed once per period. Malformed or oversized packets close this
        connection only.
        """
        assert self.session is not None and self._reader_ready is not None
        self._reader_ready.set()
        self._last_read = self._loop.time()
        self._arm_keepalive()
        buffered = b""
        if self._ws is not None and isinstance(self.reader, WebSocketsReader):
            buffered = self.reader._stream.read()  # what arrived in CONNECT's WebSocket message
        try:
            while True:
                if buffered:
                    packets, buffered = wire.split_packets(buffered, self._max_packet_size)
                    for first, body in packets:
                        if not await self._dispatch(first, body):
                            raise MalformedPacket("protocol violation")
                if self._pushed:  # read on only while the broker has room for pushes being stored
                    self._pushed = False
                    self._held = True  # not reading by choice: the keep-alive does not count it as silence
                    try:
                        await self._broker.ingest_room()
                    finally:
                        self._held = False
                        self._last_read = self._loop.time()
                chunk = await self._read_chunk()
                if not chunk:
                    break
                self._last_read = self._loop.time()
                buffered = buffered + chunk if buffered else chunk
                transport = self._transport
                if transport is not None and transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                    await self.writer.drain()  # type: ignore[union-attr]
        except MalformedPacket as exc:
            log.info("closing the connection of %s: %s", self.session.client_id, exc)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("closing the connection of %s after an error", self.session.client_id)
        if self._keepalive is not None:
            self._keepalive.cancel()
        await self.handle_connection_closed()
        self._reader_stopped.set()
        await self.stop()

    async def _read_chunk(self) -> bytes:
        if self._stream is not None:
            return await self._stream.read(_READ_SIZE)
        if self._ws is not None:
            try:
                message = await self._ws.recv()
            except ConnectionClosed:
                return b""
            return message.encode() if isinstance(message, str) else bytes(message)
        assert self.reader is not None  # another adapter: byte by byte, slow but exact
        try:
            return await self.reader.read(1)
        except asyncio.IncompleteReadError:
            return b""

    def _arm_keepalive(self) -> None:
        if self.keepalive_timeout:
            self._keepalive = self._loop.call_later(self.keepalive_timeout, self._check_keepalive)

    def _check_keepalive(self) -> None:
        timeout = self.keepalive_timeout
        assert timeout
        idle = 0.0 if self._held else self._loop.time() - self._last_read
        if idle >= timeout:
            self.handle_read_timeout()
        else:
            self._keepalive = self._loop.call_later(timeout - idle, self._check_keepalive)

    def handle_read_timeout(self) -> None:
        """Replaces ``BrokerProtocolHandler.handle_read_timeout`` (a no-op upstream, so keep-alive was never
        enforced and a silent client's will never published): the connection is closed as abnormal."""
        log.info(
            "client %s silent past its keep-alive: disconnecting", self.session and self.session.client_id
        )
        if self._stream is not None:
            self._stream.feed_eof()
        elif self._ws is not None:
            self._ws.transport.abort()
        elif self.reader is not None:
            self.reader.feed_eof()

    async def _dispatch(self, first: int, body: bytes) -> bool:
        """Handle one packet; False for a protocol violation (the connection is then closed)."""
        kind = first >> 4
        if kind == wire.PUBLISH:
            return await self._on_publish(first, body)
        if kind == wire.PUBACK or kind == wire.PUBCOMP:
            self._acknowledged(wire.packet_id(body), 1 if kind == wire.PUBACK else 2)
        elif kind == wire.PUBREC:
            pid = wire.packet_id(body)
            flight = self.session.inflight_out.get(pid) if self.session else None
            if isinstance(flight, _Flight) and flight.qos == 2:
                flight.released = True
            self._write(wire.ack(wire.PUBREL, pid))
        elif kind == wire.PUBREL:
            await self._on_pubrel(wire.packet_id(body))
        elif kind == SUBSCRIBE:
            subscribe = await _parse(SubscribePacket, first, body)
            assert subscribe.variable_header is not None and subscribe.payload is not None
            await self._broker.subscribe(
                self.session, self, subscribe.variable_header.packet_id, subscribe.payload.topics
            )
        elif kind == UNSUBSCRIBE:
            unsubscribe = await _parse(UnsubscribePacket, first, body)
            assert unsubscribe.variable_header is not None and unsubscribe.payload is not None
            self._broker.unsubscribe(self.session, unsubscribe.payload.topics)
            self._write(wire.ack(UNSUBACK, unsubscribe.variable_header.packet_id))
        elif kind == PINGREQ:
            self._write(wire.PINGRESP)
        elif kind == DISCONNECT:
            await self.handle_disconnect(DisconnectPacket())
        else:
            log.info(
                "client %s sent packet type %d after CONNECT", self.session and self.session.client_id, kind
            )
            return False
        return True

    async def _on_publish(self, first: int, body: bytes) -> bool:
        qos = (first >> 1) & 3
        if qos == 3:
            raise MalformedPacket("PUBLISH with QoS 3")  # MQTT-3.3.1-4
        topic, pid, payload = wire.parse_publish(first, body)
        session = self.session
        assert session is not None
        retain = bool(first & 1)
        if qos == 2:
            assert pid is not None
            if pid not in session.inflight_in:  # a DUP resend before PUBREL is the same message
                session.inflight_in[pid] = _Received(topic, payload, retain)  # type: ignore[assignment]
            self._write(wire.ack(wire.PUBREC, pid))
            return True
        settled = await self._broker.accept_publish(session, topic, payload, qos, retain)
        if settled is not None:
            self._pushed = True
        if pid is not None:
            self._acknowledge_after(settled, wire.ack(wire.PUBACK, pid))
        return True

    async def _on_pubrel(self, pid: int) -> None:
        """Deliver the held message once. It is let go only when delivered, or stored for a push: a push
        the server failed to store gets no PUBCOMP and stays held, so the PUBREL the client sends again
        (on reconnecting with its session) stores it then, instead of being answered for a lost message."""
        session = self.session
        assert session is not None
        inflight = session.inflight_in
        received = inflight.get(pid)
        if not isinstance(received, _Received):  # delivered already: answer again (MQTT-4.3.3-2)
            self._acknowledge_after(None, wire.ack(wire.PUBCOMP, pid))
            return
        if received.storing is not None:
            self._acknowledge_after(received.storing, wire.ack(wire.PUBCOMP, pid))
            return
        settled = await self._broker.accept_publish(
            session, received.topic, received.data, 2, received.retain
        )
        if settled is None:
            inflight.pop(pid, None)
        else:
            received.storing = settled

            def _stored(done: asyncio.Future[bool]) -> None:
                if not done.cancelled() and done.result():
                    if inflight.get(pid) is received:
                        del inflight[pid]
                else:
                    received.storing = None

            settled.add_done_callback(_stored)
        self._acknowledge_after(settled, wire.ack(wire.PUBCOMP, pid))

    def _acknowledge_after(self, settled: asyncio.Future[bool] | None, packet: bytes) -> None:
        """Send ``packet`` once ``settled`` (a push being committed) is true, in the order the PUBLISHes
        came (MQTT 4.6); ``None`` means settled now. A push the server failed to store is not
        acknowledged, so the client sends it again."""
        if settled is None and not self._acks:
            self._write(packet)
            return
        if self._acks is None:
            self._acks = deque()
        self._acks.append((settled, packet))
        if settled is not None:
            settled.add_done_callback(self._release_acks)

    def _release_acks(self, _done: object = None) -> None:
        acks = self._acks
        while acks:
            settled, packet = acks[0]
            if settled is not None and not settled.done():
                return
            acks.popleft()
            if settled is None or (not settled.cancelled() and settled.result()):
                self._write(packet)

    # -- writing --------------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Queue bytes for the socket; everything written in one event-loop turn goes out in one send."""
        out = self._out
        out.append(data)
        if len(out) == 1:
            self._loop.call_soon(self._flush)

    send = _write  # for the broker's replies it builds itself (SUBACK)

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self._transport
        if transport is not None:
            if not transport.is_closing():
                transport.write(data)
            return
        if self.writer is None:
            return
        self.writer.write(data)  # WebSocket (or another adapter): buffered there until drained
        self._ws_dirty = True
        if self._ws_drain is None or self._ws_drain.done():
            self._ws_drain = asyncio.ensure_future(self._drain_adapter())

    async def _drain_adapter(self) -> None:
        while self._ws_dirty and self.writer is not None:
            self._ws_dirty = False
            try:
                await self.writer.drain()
            except (ConnectionClosed, ConnectionError):
                return

    async def _send_packet(self, packet: Any) -> None:
        """Replaces ``ProtocolHandler._send_packet`` (write lock, drain, keep-alive timer re-armed and a
        plugin event per packet): the packet is encoded and queued for the next flush. A broker's write
        timer did nothing (``handle_write_timeout`` is a no-op in ``BrokerProtocolHandler``)."""
        self._write(packet.to_bytes())

    # -- outgoing messages ----------------------------------------------------------------------------

    def deliver(self, message: Outgoing, qos: int, retain: bool = False) -> bool:
        """Send ``message`` to this client at ``qos``, without waiting. QoS 1/2 go out while fewer than
        ``max_inflight`` are unacknowledged, else wait in order; False when it was dropped (counted)."""
        session = self.session
        if session is None:
            return False
        if qos == 0:
            transport = self._transport
            if self._closing or (
                transport is not None and transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT
            ):
                self._broker.dropped_qos0 += 1
                return False
            self._write(message.packet(0, retain=retain))
            return True
        if self._closing:
            if session.clean_session:
                return False
            return self._broker.queue_offline(session, message.topic, message.data, qos)
        pending = self._pending
        if len(session.inflight_out) >= self._max_inflight or pending:
            if pending is None:
                pending = self._pending = deque()
            if len(pending) >= self._max_queued:
                self._broker.count_dropped(session, message.topic)
                return False
            pending.append((message, qos, retain))
            return True
        self._send(session, message, qos, retain)
        return True

    def _send(self, session: Session, message: Outgoing, qos: int, retain: bool) -> None:
        pid = session.next_packet_id
        session.inflight_out[pid] = _Flight(message, qos, retain)  # type: ignore[assignment]
        self._write(message.packet(qos, pid, retain=retain))

    def _acknowledged(self, pid: int, qos: int) -> None:
        """PUBACK (QoS 1) or PUBCOMP (QoS 2) for ``pid``: the window has room for the next waiting one."""
        session = self.session
        if session is None:
            return
        flight = session.inflight_out.get(pid)
        if not isinstance(flight, _Flight) or flight.qos != qos:
            log.debug("client %s acknowledged unknown packet id %d", session.client_id, pid)
            return
        del session.inflight_out[pid]
        pending = self._pending
        while pending and len(session.inflight_out) < self._max_inflight:
            message, next_qos, retain = pending.popleft()
            self._send(session, message, next_qos, retain)

    @property
    def waiting(self) -> int:
        """QoS 1/2 messages held back by the in-flight window."""
        return len(self._pending or ())

    async def mqtt_publish(  # type: ignore[override]
        self,
        topic: str,
        data: bytes | bytearray,
        qos: int | None,
        retain: bool,
        ack_timeout: int | None = None,
    ) -> None:
        """Replaces ``ProtocolHandler.mqtt_publish``, which waited for the acknowledgement in the caller's
        Task and gave up after 5 s: the message goes through ``deliver`` and its window instead."""
        self.deliver(Outgoing(topic, bytes(data)), qos or 0, retain)

    async def _retry_deliveries(self) -> None:
        """Replaces ``ProtocolHandler._retry_deliveries`` (a Task with a 10 s ``wait_for`` per message):
        unacknowledged messages of a resumed session are sent again with DUP set, or their PUBREL
        (MQTT-4.4.0-1), in their original order."""
        session = self.session
        assert session is not None
        for pid, flight in list(session.inflight_out.items()):
            if not isinstance(flight, _Flight):
                continue
            if flight.qos == 2 and flight.released:
                self._write(wire.ack(wire.PUBREL, pid))
            else:
                self._write(flight.message.packet(flight.qos, pid, retain=flight.retain, dup=True))


async def _parse(cls: Any, first: int, body: bytes) -> Any:
    """An upstream packet object for the rare packets (SUBSCRIBE, UNSUBSCRIBE), parsed from memory."""
    try:
        return await cls.from_stream(BufferReader(body), MQTTFixedHeader(first >> 4, first & 0x0F, len(body)))
    except Exception as exc:
        raise MalformedPacket(f"unreadable packet type {first >> 4}: {exc}") from exc
