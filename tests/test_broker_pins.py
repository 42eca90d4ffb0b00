"""broker/ overrides private methods of amqtt 0.12.1: an upgrade must fail here, loudly, not silently."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import ProtocolHandler
from amqtt.session import Session

from broker.handler import IngestProtocolHandler
from broker.server import PushgateBroker

# Upstream names the overrides replace, extend or call, with the parameters they are called with.
BROKER_NAMES = {
    "_initialize_client_session": ["self", "reader", "writer", "remote_address", "remote_port"],
    "_handle_client_session": None,
    "_authenticate": ["self", "session", "_"],
    "_topic_filtering": ["self", "session", "topic", "action"],
    "_client_message_loop": ["self", "client_session", "handler"],
    "_handle_disconnect": ["self", "client_session", "handler", "disconnect_waiter"],
    "_run_broadcast": ["self", "running_tasks"],
    "_broadcast_message": ["self", "session", "topic", "data", "force_qos"],
    "_publish_session_retained_messages": ["self", "session"],
    "_publish_retained_messages_for_subscription": ["self", "subscription", "session"],
    "_delete_session": ["self", "client_id"],
    "_del_all_subscriptions": ["self", "session"],
    "_del_subscription": ["self", "a_filter", "session"],
    "_get_handler": ["self", "session"],
    "_matches": ["self", "topic", "a_filter"],
    "add_subscription": ["self", "subscription", "session"],
    "retain_message": None,
    "shutdown": ["self"],
    "start": ["self"],
    "_create_server_instance": ["self", "listener_name", "listener_type", "address", "port", "ssl_context"],
    "ws_connected": ["self", "websocket", "listener_name"],
}
HANDLER_NAMES = {
    "attach": ["self", "session", "reader", "writer"],
    "start": ["self"],
    "stop": ["self"],
    "_reader_loop": ["self"],
    "handle_read_timeout": ["self"],
    "handle_disconnect": ["self", "disconnect"],
    "wait_disconnect": ["self"],
    "mqtt_publish": ["self", "topic", "data", "qos", "retain", "ack_timeout"],
    "_send_packet": ["self", "packet"],
    "_retry_deliveries": ["self"],
    "handle_connection_closed": ["self"],
}
ATTRIBUTES = {
    Broker: ["_sessions", "_subscriptions", "_retained_messages", "_broadcast_queue", "_servers", "_loop"],
    ProtocolHandler: [
        "session",
        "reader",
        "writer",
        "_loop",
        "_reader_ready",
        "_reader_stopped",
        "_disconnect_waiter",
        "keepalive_timeout",
    ],
    Session: [
        "attributes",
        "retained_messages",
        "inflight_out",
        "inflight_in",
        "next_packet_id",
        "clean_session",
        "transitions",
        "parent",
    ],
}


def test_amqtt_is_the_pinned_version() -> None:
    assert version("amqtt") == "0.12.1"


def _check(cls: type, names: dict[str, list[str] | None]) -> None:
    for name, params in names.items():
        assert hasattr(cls, name), f"{cls.__name__}.{name} is gone"
        if params is not None:
            assert list(inspect.signature(getattr(cls, name)).parameters) == params, name


def test_private_methods_the_overrides_rely_on() -> None:
    _check(Broker, BROKER_NAMES)
    _check(BrokerProtocolHandler, HANDLER_NAMES)
    assert inspect.signature(BrokerProtocolHandler.init_from_connect).parameters.keys() >= {
        "reader",
        "writer",
    }


def test_attributes_the_overrides_rely_on() -> None:
    import asyncio

    async def build() -> None:
        broker = Broker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}}, "plugins": {}})
        session = Session()
        handler = BrokerProtocolHandler(broker.plugins_manager, session)
        for obj, cls in ((broker, Broker), (handler, ProtocolHandler), (session, Session)):
            for attribute in ATTRIBUTES[cls]:
                assert hasattr(obj, attribute), f"{cls.__name__}().{attribute} is gone"

    asyncio.run(build())


def test_overrides_are_subclasses() -> None:
    assert issubclass(PushgateBroker, Broker)
    assert issubclass(IngestProtocolHandler, BrokerProtocolHandler)


def test_upstream_calls_the_overridden_steps() -> None:
    """The overrides replace steps of ``Broker._handle_client_session``; it must still call them."""
    source = inspect.getsource(Broker._handle_client_session)
    for step in ("_authenticate", "handler.attach", "handler.start", "_publish_session_retained_messages"):
        assert step in source, step
    assert "self._client_message_loop(client_session, handler)" in source
    assert "_publish_retained_messages_for_subscription" in source
    for ends in (Broker._cleanup_session, Broker._delete_session):  # a session's subscriptions go with it
        assert "self._del_all_subscriptions(session)" in inspect.getsource(ends)


def test_adapter_internals_the_reader_and_writer_use() -> None:
    """``IngestProtocolHandler.attach`` reads and writes below amqtt's adapters."""
    import asyncio

    from amqtt.adapters import BufferReader, StreamReaderAdapter, StreamWriterAdapter, WebSocketsReader
    from amqtt.mqtt.packet import MQTTFixedHeader
    from amqtt.mqtt.subscribe import SubscribePacket

    loop = asyncio.new_event_loop()
    try:
        stream = asyncio.StreamReader(loop=loop)
        assert StreamReaderAdapter(stream)._reader is stream
    finally:
        loop.close()
    assert "self._writer = writer" in inspect.getsource(StreamWriterAdapter.__init__)
    ws_init = inspect.getsource(WebSocketsReader.__init__)
    assert "self._protocol = protocol" in ws_init and "self._stream = io.BytesIO" in ws_init
    assert list(inspect.signature(MQTTFixedHeader).parameters) == ["packet_type", "flags", "length"]
    assert list(inspect.signature(SubscribePacket.from_stream).parameters)[:2] == ["reader", "fixed_header"]
    assert BufferReader is not None
