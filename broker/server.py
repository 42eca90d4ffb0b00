"""Pushgate's embedded MQTT broker: amqtt 0.12.1 with pushgate's auth, ACL, ingest and egress, and fixes
for the upstream defects listed in issue 3.

Each override names the amqtt 0.12.1 method it replaces or extends; ``tests/test_broker_pins.py`` asserts
the pinned version and every private name relied on, so an upgrade fails loudly.

Outside ``<prefix>/`` the broker is a plain MQTT 3.1.1 broker for the home: user tokens may use it;
anonymous clients and topic keys may not.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any, TypeGuard

import websockets
from amqtt.adapters import BufferReader, ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, ListenerType
from amqtt.errors import MQTTError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import OutgoingApplicationMessage, Session
from amqtt.utils import gen_client_id

from broker.framing import ConnectRejected, check_protocol, read_connect
from broker.handler import UNUSED_QUEUE, IngestProtocolHandler
from broker.home_acl import HomeAcl
from broker.ingest import action_report, error_payload, push_request
from broker.session_state import SessionState
from broker.topic_tree import TopicTree
from broker.topics import DEVICE_LEAVES, PushgateTopic, parse_discovery, parse_filter, parse_topic
from broker.wire import Outgoing, remaining_length
from gateway import credentials
from gateway.access import ANONYMOUS, Principal
from gateway.config import MqttConfig
from gateway.core import Gateway
from gateway.errors import ConfigError, PushgateError, Unauthorized

__all__ = ["PRINCIPAL", "PushgateBroker"]

log = logging.getLogger(__name__)

PRINCIPAL = "pushgate.principal"  # key in Session.attributes
_INGEST_DRAIN_TIMEOUT = 10.0  # seconds shutdown waits for pushes already read to be committed
_KEEPALIVE_GRACE = 1.5  # MQTT-3.1.2-24: a client silent for 1.5 x keep-alive is disconnected
_SUBACK_FAILURE = 0x80
# Home-ACL verdicts remembered per session and access (the rules are fixed at start and a session's
# principal does not change); past this many topics a session's memory starts over.
_ACL_KEPT = 256
_READ_CACHE, _WRITE_CACHE = "pushgate.acl.read", "pushgate.acl.write"  # keys in Session.attributes


class PushgateBroker(Broker):
    def __init__(self, gateway: Gateway, config: MqttConfig) -> None:
        if config.max_inflight < 1:
            raise ConfigError(f"[mqtt] max_inflight must be at least 1 (got {config.max_inflight})")
        listener = {"max_connections": config.max_connections}
        listeners: dict[str, Any] = {
            "default": {"type": "tcp", "bind": f"{config.host}:{config.port}", **listener},
        }
        if config.websocket_enabled:
            listeners["ws"] = {"type": "ws", "bind": f"{config.host}:{config.websocket_port}", **listener}
        super().__init__(
            {
                "listeners": listeners,
                "plugins": {},  # auth and ACL are pushgate's, called directly below
                "session_expiry_interval": int(config.session_expiry) or None,
            }
        )
        self._gateway = gateway
        self._config = config
        self._prefix = config.prefix
        self._prefix_level = config.prefix + "/"
        self._ingesting: set[asyncio.Future[Any]] = set()  # pushes read, not yet stored (and their errors)
        self._ingest_room = asyncio.Event()  # clear while ``_ingesting`` is at ``max_pending_pushes``
        self._ingest_room.set()
        self.ingest_pauses = 0  # times a pushing connection's reading waited for room
        self._home_acl = HomeAcl(config.home_acl)
        discovery = gateway.homeassistant
        self._discovery_prefix = discovery.prefix if discovery.enabled else None
        self._tree: TopicTree[Session] = TopicTree()  # the routing index; upstream's dict stays for its code
        self._audit: asyncio.Task[None] | None = None
        self._audit_now = asyncio.Event()
        gateway.on_keys_revoked(self._audit_now.set)
        self.dropped_queued = 0  # QoS 1/2 messages dropped because a session's queue was full
        self.dropped_qos0 = 0  # QoS 0 messages dropped because the client did not read its socket

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Extends ``Broker.start`` with the key audit (see ``disconnect_revoked``); upstream clears its
        subscriptions at start, so does the tree."""
        self._tree.clear()
        await super().start()
        self._audit = asyncio.create_task(self._audit_keys(), name="mqtt-key-audit")

    async def shutdown(self) -> None:
        """Extends ``Broker.shutdown``: pushes already read are committed before the broker stops."""
        if self._audit is not None:
            self._audit.cancel()
            await asyncio.gather(self._audit, return_exceptions=True)
        if self._ingesting:
            await asyncio.wait(self._ingesting, timeout=_INGEST_DRAIN_TIMEOUT)
        await super().shutdown()

    async def _audit_keys(self) -> None:
        """Re-check live sessions' keys when this process revoked one, else every interval (another
        process, such as the CLI, may have)."""
        while True:
            try:
                await asyncio.wait_for(self._audit_now.wait(), self._config.key_audit_interval)
            except TimeoutError:
                pass
            self._audit_now.clear()
            try:
                await self.disconnect_revoked()
            except Exception:
                log.exception("key audit failed; trying again")

    async def disconnect_revoked(self) -> int:
        """Disconnect every connected client whose key has been revoked since it connected.

        Keys are checked at CONNECT; this catches revocations afterwards, also those made by another
        process (the CLI). The client's next CONNECT is refused by the normal check. Returns the count.
        """
        by_key: dict[str, list[Session]] = {}
        for session, _handler in self._sessions.values():
            principal = session.attributes.get(PRINCIPAL)
            if principal is not None and principal.key_id and session.transitions.is_connected():
                by_key.setdefault(principal.key_id, []).append(session)
        revoked = await self._gateway.access.revoked_keys(by_key)
        closed = 0
        for key_id in revoked:
            for session in by_key[key_id]:
                handler = self._get_handler(session)
                if handler is not None:
                    log.info("disconnecting %s: its key %s was revoked", session.client_id, key_id)
                    session.attributes.pop(PRINCIPAL, None)
                    await handler.handle_connection_closed()
                    closed += 1
        return closed

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> asyncio.Server | websockets.asyncio.server.Server:
        """Replaces ``Broker._create_server_instance`` for WebSocket listeners: upstream accepts frames up
        to websockets' default 1 MiB whatever the broker's limit; here a frame may carry one packet of at
        most ``max_packet_size`` (plus its 5-byte fixed header). TCP listeners take the upstream path."""
        if listener_type != ListenerType.WS:
            return await super()._create_server_instance(
                listener_name, listener_type, address, port, ssl_context
            )
        return await websockets.serve(
            partial(self.ws_connected, listener_name=listener_name),
            address,
            port,
            ssl=ssl_context,
            subprotocols=[websockets.Subprotocol("mqtt")],
            max_size=self._config.max_packet_size + 5,
        )

    def listener_port(self, name: str = "default") -> int:
        """The port a listener actually bound (the configured one, or the ephemeral one for port 0)."""
        instance = self._servers[name].instance
        return int(instance.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    @property
    def port(self) -> int:
        """The TCP listener's bound port."""
        return self.listener_port("default")

    # -- egress: the core's MqttEgress ---------------------------------------------------------------

    async def subscriber_count(self, mqtt_topic: str) -> int:
        sessions: set[str] = set()
        for client_id, session, _qos in self._tree.match(mqtt_topic):
            if client_id not in sessions and await self._may_receive(session, mqtt_topic):
                sessions.add(client_id)
        return len(sessions)

    async def publish(self, mqtt_topic: str, payload: bytes, qos: int) -> int:
        return await self._route(mqtt_topic, payload, qos)

    async def publish_many(self, mqtt_topic: str, payloads: Sequence[bytes], qos: int) -> int:
        return await self._route_all(mqtt_topic, payloads, qos)

    async def publish_retained(self, mqtt_topic: str, payload: bytes, qos: int) -> None:
        """As a client's retained publish: to the current subscribers, then kept (or, empty, deleted)."""
        await self._route(mqtt_topic, payload, qos)
        await self.retain_message(None, mqtt_topic, payload, qos)

    # -- CONNECT -------------------------------------------------------------------------------------

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """Replaces ``Broker._initialize_client_session``.

        Upstream parses CONNECT with no deadline or size limit, leaves MQTT 5 clients hanging and drops
        MQTT 3.1 ones without a CONNACK, and runs the session clean-up (deleting or taking over the
        session of the same client id) *before* authentication, so a failed login could disconnect a
        legitimate client, left a stale session behind, and was refused with session-present = 1.
        Here the CONNECT is read within ``connect_timeout`` and ``max_packet_size``, the protocol is
        negotiated (CONNACK 0x01 for 3.1 and 5), and credentials are checked before any session is
        touched. Every refusal raises ``MQTTError``, which makes the caller release the listener slot.
        """
        try:
            raw = await read_connect(
                reader, timeout=self._config.connect_timeout, max_size=self._config.max_packet_size
            )
            check_protocol(raw)
        except ConnectRejected as exc:
            log.info("MQTT connection from %s:%s refused: %s", remote_address, remote_port, exc)
            if exc.reply:
                writer.write(exc.reply)
                await writer.drain()
            await writer.close()
            raise
        _plain, session = await BrokerProtocolHandler.init_from_connect(
            BufferReader(raw), writer, self.plugins_manager
        )
        if not await self._admit(session):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"client {session.client_id!r} from {remote_address} not authorised")

        session = await self._attach_session(session)
        if session.keep_alive > 0:
            session.keep_alive = math.ceil(session.keep_alive * _KEEPALIVE_GRACE)
        handler = IngestProtocolHandler(self, self._config, self.plugins_manager, loop=self._loop)
        return handler, session

    async def _attach_session(self, incoming: Session) -> Session:
        """Upstream's session-cache step, run only after authentication succeeded."""
        client_id = incoming.client_id
        existing = self._sessions.get(client_id) if client_id else None
        if existing is not None and existing[0].transitions.is_connected():
            log.info("client id %s connected again: closing the older connection", client_id)
            await existing[1].handle_connection_closed()
            await existing[1].stop()
        # upstream's per-session state machine and delivery queue, replaced by lighter equivalents
        incoming.transitions = SessionState(incoming)  # type: ignore[assignment]
        incoming.delivered_message_queue = UNUSED_QUEUE
        if incoming.clean_session:
            if client_id:
                await self._delete_session(client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
            return incoming
        if existing is None:
            incoming.parent = 0
            return incoming
        session = existing[0]
        for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive"):
            setattr(session, name, getattr(incoming, name))
        session.username, session.password = incoming.username, incoming.password
        session.attributes[PRINCIPAL] = incoming.attributes[PRINCIPAL]
        for cache in (_READ_CACHE, _WRITE_CACHE):  # verdicts of the previous connection's principal
            session.attributes.pop(cache, None)
        session.remote_address, session.remote_port = incoming.remote_address, incoming.remote_port
        session.parent = 1
        return session

    async def _admit(self, session: Session) -> bool:
        """Resolve the CONNECT's credentials through the core; the result lives as long as the session."""
        if session.password:
            presented: str | None = session.password
        elif session.username and credentials.parse(session.username) is not None:
            presented = session.username  # the key as username with an empty password
        else:
            presented = None  # a plain device name, or nothing: anonymous
        try:
            principal = await self._gateway.access.authenticate(presented)
        except Unauthorized:
            log.info("MQTT client %s refused: invalid credentials", session.client_id)
            return False
        if principal is ANONYMOUS and not self._config.allow_anonymous:
            log.info("MQTT client %s refused: anonymous access is off", session.client_id)
            return False
        # Never ``session.is_anonymous = True``: upstream's session monitor deletes such persistent
        # sessions a second after they disconnect, losing their queued messages.
        session.attributes[PRINCIPAL] = principal
        return True

    async def _authenticate(self, session: Session, _listener: Any) -> bool:
        """Replaces ``Broker._authenticate``: the decision was made in ``_admit`` at CONNECT."""
        return PRINCIPAL in session.attributes

    # -- ACL -----------------------------------------------------------------------------------------

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        """Replaces ``Broker._topic_filtering`` with pushgate's ACL, called directly (no plugin Tasks)."""
        principal: Principal = session.attributes.get(PRINCIPAL, ANONYMOUS)
        if action == Action.SUBSCRIBE:
            return await self._may_subscribe(principal, topic)
        if action == Action.PUBLISH:
            parsed = parse_topic(self._prefix, topic)
            if parsed is None:
                if self._discovery_name(topic) is not None:
                    return False  # the gateway's Home Assistant discovery configs: not to be forged
                return topic.split("/", 1)[0] != self._prefix and self._home_acl.allows(
                    principal, "write", topic
                )
            if parsed.leaf not in DEVICE_LEAVES:
                return False  # message/action/receipt/error are the gateway's to publish
            return await self._may_push(principal, parsed.name)
        return await self._may_receive(session, topic)

    async def _may_receive(self, session: Session, topic: str) -> bool:
        verdict = self._receive_verdict(session, topic)
        if verdict is not None:
            return verdict
        principal: Principal = session.attributes.get(PRINCIPAL, ANONYMOUS)
        if not self._in_prefix(topic):  # a discovery config whose topic is not cached
            name = self._discovery_name(topic)
            assert name is not None
            return await self._may_read_discovery(principal, name)
        parsed = parse_topic(self._prefix, topic)
        assert parsed is not None
        return await self._may_access(principal, parsed.name)

    def _receive_verdict(self, session: Session, topic: str) -> bool | None:
        """``_may_receive`` without waiting, or ``None`` when the topic's privacy is not cached."""
        principal: Principal = session.attributes.get(PRINCIPAL, ANONYMOUS)
        if not self._in_prefix(topic):
            if not self._home_allows(session, "read", topic):
                return False
            name = self._discovery_name(topic)
            if name is None:
                return True
            # a discovery config names its topic: only those who may read the topic receive it
            info = self._gateway.topics.cached(name)
            return None if info is None else self._gateway.access.may_access(principal, info)
        parsed = parse_topic(self._prefix, topic)
        if parsed is None:
            return principal.kind == "user"  # a malformed pushgate topic: only users see such things
        info = self._gateway.topics.cached(parsed.name)
        if info is None:
            return None
        return self._gateway.access.may_access(principal, info)

    def _in_prefix(self, topic: str) -> bool:
        return topic.startswith(self._prefix_level) or topic == self._prefix

    def _home_allows(self, session: Session, access: str, topic: str) -> bool:
        """``HomeAcl.allows`` for a session's principal, remembered per topic."""
        attributes = session.attributes
        key = _READ_CACHE if access == "read" else _WRITE_CACHE
        verdicts: dict[str, bool] | None = attributes.get(key)
        if verdicts is None:
            verdicts = attributes[key] = {}
        verdict = verdicts.get(topic)
        if verdict is None:
            if len(verdicts) >= _ACL_KEPT:
                verdicts.clear()
            principal: Principal = attributes.get(PRINCIPAL, ANONYMOUS)
            verdict = verdicts[topic] = self._home_acl.allows(principal, access, topic)
        return verdict

    def _discovery_name(self, topic: str) -> str | None:
        """The pushgate topic a Home Assistant discovery topic announces, when discovery is on."""
        if self._discovery_prefix is None:
            return None
        return parse_discovery(self._discovery_prefix, topic)

    async def _may_read_discovery(self, principal: Principal, name: str) -> bool:
        """A discovery config names its topic: only those who may read the topic receive it (a topic just
        deleted is judged as it was, so its owner's Home Assistant receives the clearing payload)."""
        topic = await self._gateway.topics.find(name) or self._gateway.homeassistant.topic_for(name)
        return topic is not None and self._gateway.access.may_access(principal, topic)

    async def _may_subscribe(self, principal: Principal, topic_filter: str) -> bool:
        parsed = parse_filter(self._prefix, topic_filter)
        if parsed is None:
            return self._home_acl.allows_subscription(principal, topic_filter)
        if parsed is True:
            # spans the home space and pushgate's (#, +/#): not for keys, which grant one topic; the home
            # ACL must reach it; every message is then checked on receipt
            return principal.kind != "key" and self._home_acl.allows_subscription(principal, topic_filter)
        assert isinstance(parsed, PushgateTopic)
        if parsed.name in ("+", "#"):
            # every topic: a key grants one topic only; others get what they may read, checked on receipt
            return principal.kind != "key"
        return await self._may_access(principal, parsed.name)

    async def _may_push(self, principal: Principal, name: str) -> bool:
        """An unknown topic is left to the core (404 on ``…/error``, or created when auto-create is on),
        except for a key, which grants one known topic only."""
        topic = await self._gateway.topics.find(name)
        if topic is None:
            return principal.kind != "key"
        return self._gateway.access.may_access(principal, topic)

    async def _may_access(self, principal: Principal, name: str) -> bool:
        topic = await self._gateway.topics.find(name)
        return topic is not None and self._gateway.access.may_access(principal, topic)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """Extends ``Broker.add_subscription``: a granted subscription may be the subscriber a waiting
        message needs."""
        code = await super().add_subscription(subscription, session)
        if code != _SUBACK_FAILURE:
            self._tree.add(subscription[0], session.client_id or "", session, code)
            if parse_filter(self._prefix, subscription[0]) is not None:
                self._gateway.outbox.wake_waiting()
        return code

    async def _del_all_subscriptions(self, session: Session) -> None:
        """Replaces ``Broker._del_all_subscriptions``, which tried every filter in the broker against the
        ending session: with a filter per device, 2,000 sessions ending (a Wi-Fi outage, a restart of the
        devices) made 4 million calls, seconds in which the event loop served nobody. Only the session's
        own filters are visited here; a filter nobody holds any more leaves upstream's dict as before."""
        for topic_filter in self._tree.filters_of(session.client_id or ""):
            if self._del_subscription(topic_filter, session) and not self._subscriptions.get(topic_filter):
                self._subscriptions.pop(topic_filter, None)

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        """Extends ``Broker._del_subscription`` (also reached through ``_del_all_subscriptions`` and
        ``_delete_session``) to keep the topic tree in step with upstream's dict."""
        self._tree.remove(a_filter, session.client_id or "")
        return super()._del_subscription(a_filter, session)

    # -- routing -------------------------------------------------------------------------------------

    async def _client_message_loop(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        """Replaces ``Broker._client_message_loop``.

        Upstream waited on four futures with ``asyncio.wait`` and made a new Task for every message,
        subscription and unsubscription a client sent. The handler's reader now handles those inline
        (``accept_publish``, ``subscribe``, ``unsubscribe``), so the connection only waits for its end.
        """
        try:
            result = await handler.wait_disconnect()
        except asyncio.CancelledError:
            return
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(result)
        await self._handle_disconnect(client_session, handler, done)

    async def subscribe(
        self, session: Session, handler: IngestProtocolHandler, packet_id: int, topics: list[tuple[str, int]]
    ) -> None:
        """What ``Broker._handle_subscription`` does, called by the reader inline: grant or refuse each
        filter, SUBACK, then the retained messages of the granted ones."""
        codes = [await self.add_subscription(subscription, session) for subscription in topics]
        handler.send(
            bytes((0x90,)) + remaining_length(2 + len(codes)) + packet_id.to_bytes(2, "big") + bytes(codes)
        )
        for subscription, code in zip(topics, codes, strict=True):
            if code != _SUBACK_FAILURE:
                await self._publish_retained_messages_for_subscription(subscription, session)

    def unsubscribe(self, session: Session, topics: list[str]) -> None:
        """What ``Broker._handle_unsubscription`` does, without its plugin events."""
        for topic_filter in topics:
            self._del_subscription(topic_filter, session)

    async def accept_publish(
        self, session: Session, topic: str, data: bytes, qos: int, retain: bool
    ) -> asyncio.Future[bool] | None:
        """A client's PUBLISH (at QoS 2, on PUBREL), called by its reader inline; replaces upstream's
        ``_handle_message_delivery`` path (the session's delivery queue, a Task per message).

        Upstream disconnected any client publishing to a ``$``-topic (the spec only forbids delivering
        it to wildcard subscribers, which the topic tree ensures). Returns a future when the message is a
        push being committed (the acknowledgement waits for it), else ``None``: the message has been
        routed, or refused by the ACL and dropped (acknowledged all the same, as mosquitto does).
        """
        if not self._in_prefix(topic):
            # the gateway's Home Assistant discovery configs are not for clients to forge
            allowed = self._discovery_name(topic) is None and self._home_allows(session, "write", topic)
        elif (parsed := parse_topic(self._prefix, topic)) is not None and parsed.leaf in DEVICE_LEAVES:
            return self._ingest_now(session, parsed, topic, data)
        else:
            allowed = await self._topic_filtering(session, topic, Action.PUBLISH)
        if not allowed:
            log.info("%s may not publish to %s: dropped", session.client_id, topic)
            return None
        await self._route(topic, data, qos)
        if retain:
            await self.retain_message(session, topic, data, qos)
        return None

    async def _broadcast_message(
        self,
        session: Session | None,
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        """Replaces ``Broker._broadcast_message``: routed at once instead of through the broadcast queue,
        whose loop made an ``asyncio.wait`` and a Task per message and one more per subscriber."""
        if topic is not None and data is not None:
            await self._route(topic, bytes(data), force_qos)

    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[OutgoingApplicationMessage]]) -> None:
        """Replaces ``Broker._run_broadcast`` (every filter in the broker tested per message): anything
        still put on upstream's broadcast queue is routed like the rest."""
        broadcast = await self._broadcast_queue.get()
        await self._route(broadcast["topic"], bytes(broadcast["data"]), broadcast.get("qos"))

    async def _route(
        self,
        topic: str,
        data: bytes,
        published_qos: int | None,
        reached: list[tuple[Session, int]] | None = None,
    ) -> int:
        """Deliver to every session whose subscription matches, found in the topic tree; returns how many
        sessions may receive it (``subscriber_count``'s figure, counted on the way).

        The QoS is the lower of the publish and the subscription (upstream used the subscription's, so a
        QoS 0 publish reached QoS 1/2 subscribers at QoS 1/2; ``None``: the subscription's, for the
        core's own messages). The message is encoded once for all subscribers. An offline persistent
        session's queue is bounded at ``max_queued_messages``, counting what it drops. ``reached`` is
        given the sessions it went to, with their QoS (``_route_all``).
        """
        matches = self._tree.route(topic)
        if not matches:
            return 0
        message = Outgoing(topic, data)
        allowed: set[str] | None = set() if len(matches) > 1 else None  # a client may match twice
        count = 0
        for client_id, target, subscribed_qos in matches:
            qos = subscribed_qos if published_qos is None or published_qos > subscribed_qos else published_qos
            verdict = self._receive_verdict(target, topic)
            if verdict is None:
                verdict = await self._may_receive(target, topic)
            if not verdict:
                continue
            if allowed is None:
                count = 1
            elif client_id not in allowed:
                allowed.add(client_id)
                count += 1
            self._hand(target, message, qos)
            if reached is not None:
                reached.append((target, qos))
        return count

    async def _route_all(self, topic: str, payloads: Sequence[bytes], published_qos: int | None) -> int:
        """``_route`` for messages on one topic, in order: the first is routed, the others go to the
        sessions it went to, so subscribers are found and their ACL checked once for all (the outbox
        hands over what committed together: 2 µs less per push). Nothing can subscribe or leave in
        between: no await follows the first."""
        reached: list[tuple[Session, int]] = []
        count = await self._route(topic, payloads[0], published_qos, reached)
        for data in payloads[1:]:
            message = Outgoing(topic, data)
            for target, qos in reached:
                self._hand(target, message, qos)
        return count

    def _hand(self, target: Session, message: Outgoing, qos: int) -> None:
        """To a connected session's writer; for an offline persistent one, into its queue (QoS 1/2)."""
        if target.transitions.state != "connected":
            if not target.clean_session and qos > 0:
                self.queue_offline(target, message.topic, message.data, qos)
            return
        handler = self._get_handler(target)
        if isinstance(handler, IngestProtocolHandler):
            handler.deliver(message, qos)

    def queue_offline(self, session: Session, topic: str, data: bytes, qos: int) -> bool:
        """Hold a QoS 1/2 message for a persistent session until it reconnects; False when its queue
        was full and the message dropped (counted)."""
        if session.retained_messages.qsize() >= self._config.max_queued_messages:
            self.count_dropped(session, topic)
            return False
        session.retained_messages.put_nowait(_QueuedMessage(topic, data, qos))  # type: ignore[arg-type]
        return True

    def count_dropped(self, session: Session, topic: str) -> None:
        self.dropped_queued += 1
        log.warning("queue of session %s is full: message on %s dropped", session.client_id, topic)

    async def _publish_session_retained_messages(self, session: Session) -> None:
        """Replaces ``Broker._publish_session_retained_messages`` (a Task per message): messages queued
        while the session was offline go out in order through the window, with the retain flag clear
        (upstream set it: they are not retained ones)."""
        handler = self._get_handler(session)
        if not isinstance(handler, IngestProtocolHandler):
            return
        while not session.retained_messages.empty():
            queued: _QueuedMessage = session.retained_messages.get_nowait()  # type: ignore[assignment]
            handler.deliver(Outgoing(queued.topic, queued.data), queued.qos)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """Replaces ``Broker._publish_retained_messages_for_subscription``.

        At CONNECT upstream calls this for every filter any session holds, and sends the matching retained
        messages without the ACL's receive check: a client could read retained messages of topics it may
        not read. Here only the session's own subscriptions count, and each retained topic is checked.
        Another session's filter is dismissed by one set lookup: a reconnecting fleet makes this call
        once per filter in the broker for each device that connects.
        """
        if not self._retained_messages or not self._tree.holds(session.client_id or "", subscription[0]):
            return
        topic_filter, _ = subscription
        granted = next(
            (
                qos
                for holder, qos in self._subscriptions.get(topic_filter, ())
                if holder.client_id == session.client_id
            ),
            None,
        )
        handler = self._get_handler(session)
        if granted is None or not isinstance(handler, IngestProtocolHandler):
            return
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._may_receive(session, topic):
                qos = granted if retained.qos is None else min(granted, retained.qos)
                handler.deliver(Outgoing(topic, bytes(retained.data)), qos, retain=True)

    # -- ingest --------------------------------------------------------------------------------------

    def start_ingest(self, session: Session, mqtt_topic: str, payload: bytes) -> asyncio.Task[bool]:
        """Run ``ingest`` in a Task the broker owns, so closing the connection cannot cancel it."""
        task = asyncio.create_task(self.ingest(session, mqtt_topic, payload))
        self._track_push(task)
        task.add_done_callback(self._untrack_push)
        return task

    def _track_push(self, future: asyncio.Future[Any]) -> None:
        self._ingesting.add(future)
        if len(self._ingesting) >= self._config.max_pending_pushes:
            self._ingest_room.clear()

    def _untrack_push(self, future: asyncio.Future[Any]) -> None:
        self._ingesting.discard(future)
        if not self._ingest_room.is_set() and len(self._ingesting) <= self._config.max_pending_pushes // 2:
            self._ingest_room.set()

    async def ingest_room(self) -> None:
        """Return at once while fewer than ``[mqtt] max_pending_pushes`` pushes wait to be stored; else
        once half of them are. A pushing connection's reader awaits this before reading on: the pushes
        it sent meanwhile wait in TCP buffers, and the device's own writes block, instead of memory here
        growing while the disk is slow."""
        if not self._ingest_room.is_set():
            self.ingest_pauses += 1
            await self._ingest_room.wait()

    def _ingest_now(
        self, session: Session, parsed: PushgateTopic, mqtt_topic: str, payload: bytes
    ) -> asyncio.Future[bool] | None:
        """``ingest`` without a Task when the topic is cached: the core's ``Publisher.submit`` joins the
        group commit and resolves the returned future once stored. Other cases take ``start_ingest``."""
        info = self._gateway.topics.cached(parsed.name) if parsed.leaf == "push" else None
        if info is None:
            return self.start_ingest(session, mqtt_topic, payload)
        principal: Principal = session.attributes.get(PRINCIPAL, ANONYMOUS)
        if not self._gateway.access.may_access(principal, info):
            log.info("MQTT client %s may not push to %s: dropped", session.client_id, parsed.name)
            return None
        try:
            request = push_request(parsed.name, payload, session.remote_address)
        except PushgateError as exc:
            self._refused(session, parsed.name, exc)
            return None
        settled: asyncio.Future[bool] = self._loop.create_future()

        def _stored(exc: BaseException | None) -> None:
            self._untrack_push(settled)
            if isinstance(exc, asyncio.CancelledError):
                settled.set_result(False)
                return
            if _clients_fault(exc):
                self._refused(session, parsed.name, exc)
            elif exc is not None:
                log.error("MQTT push on %s from %s failed", parsed.name, session.client_id, exc_info=exc)
            settled.set_result(exc is None or _clients_fault(exc))

        self._track_push(settled)  # before: a refusal is told at once
        self._gateway.publisher.submit(request, principal, _stored)
        return settled

    def _refused(self, session: Session, name: str, exc: PushgateError) -> None:
        """A push refused for the client's fault is answered on ``…/error`` (a Task only then)."""
        log.info("MQTT push on %s from %s refused: %s", name, session.client_id, exc.message)
        error = asyncio.ensure_future(self._route(f"{self._prefix}/{name}/error", error_payload(exc), 0))
        self._track_push(error)
        error.add_done_callback(self._untrack_push)

    async def ingest(self, session: Session, mqtt_topic: str, payload: bytes) -> bool:
        """Give a device's push (or action report) to the core. True when settled (stored, or refused for
        the client's fault and answered on ``…/error``); False when the server failed and it should resend."""
        parsed = parse_topic(self._prefix, mqtt_topic)
        assert parsed is not None
        principal: Principal = session.attributes.get(PRINCIPAL, ANONYMOUS)
        if not await self._may_push(principal, parsed.name):
            # an ACL refusal is dropped and logged, never echoed on the other topic's error channel
            log.info("MQTT client %s may not push to %s: dropped", session.client_id, parsed.name)
            return True
        try:
            if parsed.leaf == "act":
                await self._gateway.actions.report(principal, action_report(payload), topic_name=parsed.name)
            else:
                await self._gateway.publish(
                    push_request(parsed.name, payload, session.remote_address), principal
                )
        except Exception as exc:
            if not _clients_fault(exc):
                log.exception("MQTT push on %s from %s failed", parsed.name, session.client_id)
                return False
            assert isinstance(exc, PushgateError)
            log.info("MQTT push on %s from %s refused: %s", parsed.name, session.client_id, exc.message)
            await self._route(f"{self._prefix}/{parsed.name}/error", error_payload(exc), 0)
        return True


def _clients_fault(exc: BaseException | None) -> TypeGuard[PushgateError]:
    """A refusal the client caused (4xx: answered on ``…/error`` and acknowledged), not a failure of the
    server (5xx, or any other exception: not acknowledged, so the device sends the message again)."""
    return isinstance(exc, PushgateError) and exc.status < 500


class _QueuedMessage:
    """A message held for an offline persistent session (what upstream's session queue stores)."""

    __slots__ = ("data", "qos", "topic")

    def __init__(self, topic: str, data: bytes, qos: int) -> None:
        self.topic = topic
        self.data = data
        self.qos = qos
