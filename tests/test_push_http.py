"""The push services' HTTP/1.1 client (``gateway/channels/push_http.py``) against a scripted TLS server on
loopback: what goes on the wire, connections kept alive and given up, answers of every framing, the
limits, the timeout, certificate checks and the SSRF guard."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from gateway.channels.push_http import MAX_BODY, MAX_HEAD, HttpError, Origin, PushHttp, Response
from gateway.channels.webhook import UrlGuard, UrlRefused
from tests.conftest import TIMEOUT

OK = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
DROP = b""  # as an answer: the connection is closed without one


@dataclass
class Exchange:
    connection: int  # which accepted connection carried it (1, 2, ...)
    head: bytes
    body: bytes


@dataclass
class Script:
    """The server's answers in order (bytes, or None for no answer at all); then ``OK`` for the rest.
    ``close_after`` closes a connection right after the answer with that index (without saying so)."""

    answers: list[bytes | None] = field(default_factory=list)
    close_after: set[int] = field(default_factory=set)
    received: list[Exchange] = field(default_factory=list)
    connections: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # a connection ended (either side closed it)


async def _serve(script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    script.connections += 1
    connection = script.connections
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            index = len(script.received)
            script.received.append(Exchange(connection, head, body))
            answer = script.answers[index] if index < len(script.answers) else OK
            if answer is None:
                continue  # never answered: the client's timeout ends it
            if answer == DROP:
                return
            try:
                writer.write(answer)
                await writer.drain()
            except ConnectionError:  # the client gave up reading (an answer too large)
                return
            if (
                index in script.close_after
                or b"Connection: close" in answer
                or answer.startswith(b"HTTP/1.0")
            ):
                return
    finally:
        writer.close()
        script.ended.set()


@dataclass
class Service:
    script: Script
    port: int
    client_tls: ssl.SSLContext

    def origin(self, host: str = "127.0.0.1") -> Origin:
        return Origin(host, self.port, f"{host}:{self.port}")

    def client(
        self,
        *,
        allowed: tuple[str, ...] = ("127.0.0.1", "localhost"),
        timeout: float = TIMEOUT,
        max_idle: int = 32,
    ) -> PushHttp:
        return PushHttp(self.client_tls, UrlGuard(allowed, ()), timeout, max_idle)


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    script = Script()
    server = await asyncio.start_server(lambda r, w: _serve(script, r, w), "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Service(script, port, client_tls)
    finally:
        server.close()
        await server.wait_closed()


def request(origin: Origin, body: bytes = b"sealed", path: str = "/push/a") -> bytes:
    return origin.head(path, "TTL: 60\r\nContent-Encoding: aes128gcm\r\n", len(body)) + body


async def test_the_request_on_the_wire_and_the_connection_kept_for_the_next(service: Service) -> None:
    http = service.client()
    origin = service.origin()
    first = await http.post(origin, request(origin, b"\x00\x01body", "/push/abc?x=1"))
    second = await http.post(origin, request(origin, b"two", "/push/def"))
    http.close()
    assert first == Response(201, "Created", None, b"") and second.status == 201
    one, two = service.script.received
    assert one.head == (
        b"POST /push/abc?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: pushgate\r\nContent-Length: 6\r\n"
        b"TTL: 60\r\nContent-Encoding: aes128gcm\r\n\r\n" % service.port
    )
    assert one.body == b"\x00\x01body" and two.body == b"two"
    assert (one.connection, two.connection) == (1, 1) and service.script.connections == 1


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (  # chunked, with Retry-After and a reason of several words
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 120\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nslow \r\n4\r\ndown\r\n0\r\n\r\n",
            Response(429, "Too Many Requests", "120", b"slow down"),
        ),
        (  # a body that ends with the connection
            b"HTTP/1.0 410 Gone\r\n\r\nsubscription expired",
            Response(410, "Gone", None, b"subscription expired"),
        ),
        (  # an interim 100 Continue before the answer
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            Response(201, "Created", None, b"ok"),
        ),
    ],
)
async def test_answers_of_every_framing_are_read_whole(
    service: Service, answer: bytes, expected: Response
) -> None:
    service.script.answers = [answer]
    http = service.client()
    origin = service.origin()
    assert await http.post(origin, request(origin)) == expected
    # whatever the first answer's framing, the next request is answered on a usable connection
    assert (await http.post(origin, request(origin))).status == 201
    http.close()


@pytest.mark.parametrize(
    "size",
    [
        MAX_BODY * 3,
        MAX_HEAD * 2,  # past the head's limit, which is on the head only, even when read with it at once
    ],
)
async def test_a_long_body_is_kept_only_in_part_and_the_connection_stays_usable(
    service: Service, size: int
) -> None:
    service.script.answers = [b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (size, b"x" * size)]
    http = service.client()
    origin = service.origin()
    answer = await http.post(origin, request(origin))
    assert answer.status == 500 and answer.body == b"x" * MAX_BODY
    assert (await http.post(origin, request(origin))).status == 201
    assert service.script.connections == 1
    http.close()


async def test_at_most_max_idle_connections_are_kept_the_host_used_longest_ago_first(
    service: Service,
) -> None:
    """Two hosts (names of the same server), one connection kept in all: using the second closes the
    first's, which the next request to the first host then opens anew."""
    http = service.client(max_idle=1)
    by_address, by_name = service.origin("127.0.0.1"), service.origin("localhost")
    await http.post(by_address, request(by_address, b"one"))
    await http.post(by_name, request(by_name, b"two"))
    await asyncio.wait_for(service.script.ended.wait(), TIMEOUT)  # the first host's connection, closed
    await http.post(by_name, request(by_name, b"three"))
    await http.post(by_address, request(by_address, b"four"))
    http.close()
    connections = [(e.connection, e.body) for e in service.script.received]
    assert connections == [(1, b"one"), (2, b"two"), (2, b"three"), (3, b"four")]


async def test_connection_close_is_honoured(service: Service) -> None:
    service.script.answers = [b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"]
    http = service.client()
    origin = service.origin()
    await http.post(origin, request(origin))
    await http.post(origin, request(origin))
    http.close()
    assert [e.connection for e in service.script.received] == [1, 2]


async def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_request_sent_once(
    service: Service,
) -> None:
    service.script.close_after = {0}
    http = service.client()
    origin = service.origin()
    await http.post(origin, request(origin, b"first"))
    await asyncio.wait_for(service.script.ended.wait(), TIMEOUT)  # the server's side is gone
    second = await http.post(origin, request(origin, b"second"))
    http.close()
    assert second.status == 201
    assert [(e.connection, e.body) for e in service.script.received] == [(1, b"first"), (2, b"second")]


async def test_a_kept_connection_closed_as_a_request_arrives_sends_it_again_on_a_new_one(
    service: Service,
) -> None:
    """The race of a server's idle timeout: the request is written to a connection that the server
    closes without answering. It is sent once more, on a new connection."""
    service.script.answers = [OK, DROP]
    http = service.client()
    origin = service.origin()
    await http.post(origin, request(origin, b"first"))
    second = await http.post(origin, request(origin, b"second"))
    http.close()
    assert second.status == 201
    received = [(e.connection, e.body) for e in service.script.received]
    assert received == [(1, b"first"), (1, b"second"), (2, b"second")]


async def test_a_new_connection_closed_before_an_answer_is_an_error_not_sent_again(
    service: Service,
) -> None:
    service.script.answers = [DROP]
    http = service.client()
    origin = service.origin()
    with pytest.raises(HttpError, match="closed before an answer"):
        await http.post(origin, request(origin))
    http.close()
    assert len(service.script.received) == 1


async def test_no_answer_times_out_and_the_connection_is_not_reused(service: Service) -> None:
    service.script.answers = [None]
    http = service.client(timeout=0.3)
    origin = service.origin()
    with pytest.raises(TimeoutError):
        await http.post(origin, request(origin))
    await asyncio.wait_for(service.script.ended.wait(), TIMEOUT)  # the client hung up
    assert (await http.post(origin, request(origin))).status == 201
    http.close()
    assert [e.connection for e in service.script.received] == [1, 2]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * MAX_HEAD + b"\r\n\r\n", "head is larger than"),
        (b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * (MAX_HEAD * 3), "head is larger than"),  # never ends
        (b"SMTP ready\r\n\r\n", "unreadable"),
        (b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nabc", "in the middle of the answer"),
    ],
)
async def test_an_oversized_or_broken_answer_is_an_error(service: Service, answer: bytes, error: str) -> None:
    service.script.answers = [answer]
    service.script.close_after = {0}
    http = service.client()
    origin = service.origin()
    with pytest.raises(HttpError, match=error):
        await http.post(origin, request(origin))
    assert (await http.post(origin, request(origin))).status == 201
    http.close()


async def test_a_certificate_not_for_the_host_is_refused(service: Service) -> None:
    http = PushHttp(ssl.create_default_context(), UrlGuard(("127.0.0.1",), ()), TIMEOUT, 32)  # no test CA
    origin = service.origin()
    with pytest.raises(ssl.SSLCertVerificationError):
        await http.post(origin, request(origin))
    assert service.script.received == []


async def test_the_guard_is_asked_before_connecting(service: Service) -> None:
    http = service.client(allowed=())
    origin = service.origin()
    with pytest.raises(UrlRefused, match="loopback"):
        await http.post(origin, request(origin))
    assert service.script.connections == 0


@pytest.mark.parametrize("path", ["/push/a b", "/push/a\r\nX-Injected: 1", "/push/é"])
def test_a_path_http_cannot_carry_is_refused(path: str) -> None:
    origin = Origin("push.example", 443, "push.example")
    with pytest.raises(ValueError, match="path"):
        origin.head(path, "", 0)


async def test_concurrent_requests_each_get_their_own_answer(service: Service) -> None:
    """Twenty at once: each waits on its own connection; then they are all kept for reuse."""
    service.script.answers = [
        b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n%d" % (len(str(i)), i) for i in range(20)
    ]
    http = service.client()
    origin = service.origin()
    answers = await asyncio.gather(*(http.post(origin, request(origin, b"%d" % i)) for i in range(20)))
    http.close()
    by_request = {e.body: n for n, e in enumerate(service.script.received)}
    for i, answer in enumerate(answers):
        assert answer.body == b"%d" % by_request[b"%d" % i]  # the answer to this very request
    assert service.script.connections == 20


async def test_hypercorn_as_the_push_service(tmp_path: Path) -> None:
    """Another server's HTTP/1.1 (Hypercorn, h11): answers with and without a length, many at once."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until Hypercorn accepts them
    port = sock.getsockname()[1]
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]
    config.certfile, config.keyfile = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    received: list[bytes] = []

    async def push_service(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        received.append(body)
        if scope["path"].startswith("/gone/"):  # no length: Hypercorn sends it chunked
            await send({"type": "http.response.start", "status": 410, "headers": []})
            await send({"type": "http.response.body", "body": b"expired", "more_body": True})
            await send({"type": "http.response.body", "body": b" subscription"})
        else:
            await send({"type": "http.response.start", "status": 201, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})

    stop = asyncio.Event()
    serving = asyncio.create_task(serve(push_service, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    http = PushHttp(client_tls, UrlGuard(("127.0.0.1",), ()), TIMEOUT, 32)
    origin = Origin("127.0.0.1", port, f"127.0.0.1:{port}")
    try:
        answers = await asyncio.gather(
            *(http.post(origin, request(origin, b"%d" % i, f"/push/{i}")) for i in range(50))
        )
        gone = await http.post(origin, request(origin, b"late", "/gone/1"))
        after = await http.post(origin, request(origin, b"after"))
    finally:
        http.close()
        stop.set()
        await serving
    assert [answer.status for answer in answers] == [201] * 50
    assert (gone.status, gone.body) == (410, b"expired subscription")
    assert after.status == 201
    assert sorted(received) == sorted([b"%d" % i for i in range(50)] + [b"late", b"after"])
