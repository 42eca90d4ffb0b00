"""Pushgate's embedded MQTT broker: amqtt 0.12.1 with pushgate's auth, ACL, ingest and egress.

Overrides (each replaces an amqtt 0.12.1 method; ``tests/test_broker_pins.py`` asserts they still exist):
- ``_authenticate``: credentials checked by the core directly, no plugin Task per check. A topic key or
  user token as password (any username), or as username with an empty password.
- ``_topic_filtering``: pushgate's ACL (``Access.may_access`` applied to MQTT topics) instead of plugins.
- ``_initialize_client_session``: gives each connection an ``IngestProtocolHandler``, which acknowledges
  a QoS 1 push only after the core has committed it.
- ``_handle_message_delivery``: pushes that arrive through upstream's queue (QoS 2) go to the core too.
- ``add_subscription``: a new subscriber wakes messages that were waiting for one.

Outside ``<prefix>/`` the broker is a plain MQTT broker for the home: user tokens may use it; anonymous
clients and topic keys may not.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.session import ApplicationMessage, Session

from broker.handler import IngestProtocolHandler
from broker.ingest import error_payload, push_request
from broker.topics import DEVICE_LEAVES, PushgateTopic, parse_filter, parse_topic
from gateway import credentials
from gateway.access import ANONYMOUS, Principal
from gateway.config import MqttConfig
from gateway.core import Gateway
from gateway.errors import PushgateError, Unauthorized

__all__ = ["PRINCIPAL", "PushgateBroker"]

log = logging.getLogger(__name__)

PRINCIPAL = "pushgate.principal"  # key in Session.attributes
_INGEST_DRAIN_TIMEOUT = 10.0  # seconds shutdown waits for pushes already read to be committed


class PushgateBroker(Broker):
    def __init__(self, gateway: Gateway, config: MqttConfig) -> None:
        listeners: dict[str, Any] = {
            "default": {"type": "tcp", "bind": f"{config.host}:{config.port}", "max_connections": 0},
        }
        if config.websocket_enabled:
            listeners["ws"] = {"type": "ws", "bind": f"{config.host}:{config.websocket_port}"}
        super().__init__({"listeners": listeners, "plugins": {}})
        self._gateway = gateway
        self._config = config
        self._prefix = config.prefix
        self._ingesting: set[asyncio.Task[bool]] = set()

    # -- lifecycle helpers ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Extends ``Broker.shutdown``: pushes already read are committed before the broker stops."""
        if self._ingesting:
            await asyncio.wait(self._ingesting, timeout=_INGEST_DRAIN_TIMEOUT)
        await super().shutdown()

    @property
    def port(self) -> int:
        """The TCP port actually bound (the configured one, or the ephemeral one for port 0)."""
        server = self._servers["default"].instance
        return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    # -- egress: the core's MqttEgress --------------------------------------------------------------

    async def subscriber_count(self, mqtt_topic: str) -> int:
        sessions: set[str] = set()
        for topic_filter, subscriptions in self._subscriptions.items():
            if not subscriptions or not self._matches(mqtt_topic, topic_filter):
                continue
            for session, _qos in subscriptions:
                if session.client_id not in sessions and await self._may_receive(session, mqtt_topic):
                    sessions.add(session.client_id or "")
        return len(sessions)

    async def publish(self, mqtt_topic: str, payload: bytes, qos: int) -> None:
        await self._broadcast_message(None, mqtt_topic, payload, None)

    # -- auth ----------------------------------------------------------------------------------------

    async def _authenticate(self, session: Session, _listener: Any) -> bool:
        """Replaces ``Broker._authenticate``: the core resolves the credential, no plugins."""
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
        session.attributes[PRINCIPAL] = principal
        session.is_anonymous = principal is ANONYMOUS
        return True

    async def _initialize_client_session(
        self, *args: Any, **kwargs: Any
    ) -> tuple[IngestProtocolHandler, Session]:
        """Wraps ``Broker._initialize_client_session`` to hand out ``IngestProtocolHandler``.

        Upstream builds a plain ``BrokerProtocolHandler`` in ``init_from_connect``; at that point it holds
        no state, so it is replaced by an equivalent one of pushgate's class.
        """
        _plain, session = await super()._initialize_client_session(*args, **kwargs)
        return IngestProtocolHandler(self, self.plugins_manager, loop=self._loop), session

    # -- ACL -----------------------------------------------------------------------------------------

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        """Replaces ``Broker._topic_filtering`` with pushgate's ACL, called directly."""
        principal: Principal = session.attributes.get(PRINCIPAL, ANONYMOUS)
        if action == Action.SUBSCRIBE:
            return await self._may_subscribe(principal, topic)
        if action == Action.PUBLISH:
            parsed = parse_topic(self._prefix, topic)
            if parsed is None:
                return self._may_use_home(principal, topic)
            if parsed.leaf not in DEVICE_LEAVES:
                return False  # message/action/receipt/error are the gateway's to publish
            return await self._may_push(principal, parsed.name)
        return await self._may_receive(session, topic)

    async def _may_receive(self, session: Session, topic: str) -> bool:
        principal: Principal = session.attributes.get(PRINCIPAL, ANONYMOUS)
        parsed = parse_topic(self._prefix, topic)
        if parsed is None:
            if topic.split("/", 1)[0] == self._prefix:
                return principal.kind == "user"
            return self._may_use_home(principal, topic)
        return await self._may_access(principal, parsed.name)

    async def _may_subscribe(self, principal: Principal, topic_filter: str) -> bool:
        parsed = parse_filter(self._prefix, topic_filter)
        if parsed is None:
            return self._may_use_home(principal, topic_filter)
        if parsed is True:
            # spans the home space and pushgate's: users only; each message is checked on receipt
            return principal.kind == "user"
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

    @staticmethod
    def _may_use_home(principal: Principal, _topic: str) -> bool:
        return principal.kind == "user"

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """Extends ``Broker.add_subscription``: a granted subscription may be the subscriber a waiting
        message needs."""
        code = await super().add_subscription(subscription, session)
        if code != 0x80 and parse_filter(self._prefix, subscription[0]) is not None:
            self._gateway.outbox.wake_waiting()
        return code

    # -- ingest --------------------------------------------------------------------------------------

    def start_ingest(self, session: Session, mqtt_topic: str, payload: bytes) -> asyncio.Task[bool]:
        """Run ``ingest`` in a Task the broker owns, so closing the connection cannot cancel it."""
        task = asyncio.create_task(self.ingest(session, mqtt_topic, payload))
        self._ingesting.add(task)
        task.add_done_callback(self._ingesting.discard)
        return task

    def is_ingest_topic(self, mqtt_topic: str) -> bool:
        parsed = parse_topic(self._prefix, mqtt_topic)
        return parsed is not None and parsed.leaf == "push"

    async def ingest(self, session: Session, mqtt_topic: str, payload: bytes) -> bool:
        """Give a device's push to the core. True when settled (stored, or refused for the client's
        fault and answered on ``…/error``); False when the server failed and the device should resend."""
        parsed = parse_topic(self._prefix, mqtt_topic)
        assert parsed is not None
        principal: Principal = session.attributes.get(PRINCIPAL, ANONYMOUS)
        if not await self._may_push(principal, parsed.name):
            # an ACL refusal is dropped and logged, never echoed on the other topic's error channel
            log.info("MQTT client %s may not push to %s: dropped", session.client_id, parsed.name)
            return True
        try:
            request = push_request(parsed.name, payload, session.remote_address)
            await self._gateway.publish(request, principal)
        except PushgateError as exc:
            log.info("MQTT push on %s from %s refused: %s", parsed.name, session.client_id, exc.message)
            await self._publish_error(parsed.name, exc)
            return True
        except Exception:
            log.exception("MQTT push on %s from %s failed", parsed.name, session.client_id)
            return False
        return True

    async def _publish_error(self, name: str, exc: PushgateError) -> None:
        await self._broadcast_message(None, f"{self._prefix}/{name}/error", error_payload(exc), None)

    async def _handle_message_delivery(
        self, client_session: Session, handler: Any, wait_deliver: Any
    ) -> bool:
        """Extends ``Broker._handle_message_delivery``: a QoS 2 push (upstream's queued path) is ingested
        after the ACL check instead of being relayed raw; everything else takes the upstream path."""
        app_message: ApplicationMessage | None = wait_deliver.result()
        if app_message is not None and app_message.topic and self.is_ingest_topic(app_message.topic):
            await self.ingest(client_session, app_message.topic, bytes(app_message.data))
            return True
        return await super()._handle_message_delivery(client_session, handler, wait_deliver)
