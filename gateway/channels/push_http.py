"""A lean HTTP/1.1 client for push services: POSTs over TLS on kept-alive connections, parsed by httptools.

A Web Push fan-out is one small POST per browser to a handful of push service hosts, thousands a second.
aiohttp's ``ClientSession`` spends about 80 µs of Python on each (request and response objects, header
multidicts, URL objects, timers, traces), as much as the body's encryption; this client spends about 20
(``bench/README.md``, Web Push fan-out). The HTTP itself is not written here: responses are parsed by
``httptools`` (llhttp, the parser aiohttp and uvicorn use), TLS is the ``ssl`` module's, connections are
asyncio's. What is here is only what a push service needs, and nothing more is accepted:

- ``POST`` with a ``Content-Length`` body; the request head is built from the endpoint's origin and path
  (a path with a control character or a space is refused: it could not be sent without changing the
  request), ``User-Agent: pushgate`` and the caller's headers;
- the status, its reason, ``Retry-After`` and at most ``MAX_BODY`` bytes of the body are kept; a head of
  more than ``MAX_HEAD`` bytes or a body of more than ``MAX_READ`` closes the connection with an error;
- connections are kept per ``host:port`` and reused while the server keeps them alive (HTTP/1.1's default;
  ``Connection: close`` or HTTP/1.0 ends one after its answer), closed after ``IDLE`` seconds unused,
  and at most ``max_idle`` of them are kept in all (the host used longest ago gives one up first).
  A reused connection that the server had closed meanwhile (its idle timeout) fails before any byte of an
  answer: the request is then sent once more on a new connection, as browsers and urllib3 do;
- a new connection resolves its host through ``UrlGuard`` (SSRF: a refused address is never connected
  to), tries the addresses it may use in turn, and verifies the certificate against the host name;
- the whole exchange, connecting included, is bounded by ``timeout``; a connection that timed out or
  failed is closed, never reused.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import OrderedDict
from typing import NamedTuple

import httptools

from gateway.channels.webhook import UrlGuard

__all__ = ["MAX_BODY", "HttpError", "Origin", "PushHttp", "Response"]

MAX_BODY = 1024  # bytes of an answer's body kept (for the error recorded); the rest is read and dropped
MAX_HEAD = 64 * 1024  # bytes of status line and headers accepted
MAX_READ = 1024 * 1024  # bytes of body read before the connection is given up
IDLE = 30.0  # seconds a kept-alive connection may stay unused
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # what may not appear in a request target


class Response(NamedTuple):
    status: int
    reason: str
    retry_after: str | None
    body: bytes  # the first ``MAX_BODY`` bytes


class HttpError(Exception):
    """The exchange ended without a whole answer (closed, unreadable, too large)."""


class _Stale(HttpError):
    """A reused connection closed before the first byte of its answer."""


class Origin(NamedTuple):
    """Where requests for an endpoint go: ``host``/``port`` to connect to, ``netloc`` for ``Host:``."""

    host: str
    port: int
    netloc: str

    def head(self, path: str, headers: str, length: int) -> bytes:
        """The request head: ``headers`` are the caller's, each line ending with CRLF."""
        if not path.isascii() or _UNSAFE.search(path):
            raise ValueError("the endpoint's path has a space, a control character or a non-ASCII one")
        return (
            f"POST {path} HTTP/1.1\r\nHost: {self.netloc}\r\nUser-Agent: pushgate\r\n"
            f"Content-Length: {length}\r\n{headers}\r\n"
        ).encode("ascii")


class _Connection(asyncio.Protocol):
    """One TLS connection, one exchange at a time; parser callbacks fill in the answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._keep_alive = True
        self._start_answer()

    def _start_answer(self) -> None:
        """Forget what was read of the previous answer (or of an interim one)."""
        self._received = 0
        self._head = 0  # bytes of the status line and headers
        self._reason = b""
        self._retry_after: bytes | None = None
        self._body = bytearray()
        self._headers_done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._received == 0:
            waiter.set_exception(_Stale("the connection closed before an answer"))
        elif self._headers_done and not self._parser.should_keep_alive():
            self._complete()  # a body that ends with the connection
        else:
            waiter.set_exception(HttpError("the connection closed in the middle of the answer"))

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.abort(HttpError(f"an unreadable answer ({exc})"))
            return
        if self._head > MAX_HEAD or (not self._headers_done and self._received > MAX_HEAD):
            self.abort(HttpError(f"the answer's head is larger than {MAX_HEAD} bytes"))
        elif self._received > MAX_HEAD + MAX_READ:
            self.abort(HttpError(f"the answer is larger than {MAX_HEAD + MAX_READ} bytes"))

    # httptools' callbacks
    def on_status(self, status: bytes) -> None:
        self._reason += status
        self._head += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value)
        if name.lower() == b"retry-after":
            self._retry_after = value

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if len(self._body) < MAX_BODY:
            self._body += body[: MAX_BODY - len(self._body)]

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            received = self._received
            self._start_answer()
            self._received = received  # the size limits count the interim answer too
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._complete()

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            retry_after = None if self._retry_after is None else self._retry_after.decode("latin-1")
            reason = self._reason.decode("latin-1")
            waiter.set_result(
                Response(self._parser.get_status_code(), reason, retry_after, bytes(self._body))
            )

    async def exchange(self, request: bytes) -> Response:
        """Send ``request`` and wait for its answer; the caller releases or aborts the connection."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._start_answer()
        self.transport.write(request)
        return await self._waiter

    @property
    def reusable(self) -> bool:
        return self._keep_alive and not self.closed

    def abort(self, exc: HttpError | None = None) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        waiter = self._waiter
        if exc is not None and waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class PushHttp:
    """Kept-alive connections to push services, per ``host:port``, at most ``max_idle`` kept in all."""

    def __init__(self, tls: ssl.SSLContext, guard: UrlGuard, timeout: float, max_idle: int) -> None:
        self._tls = tls
        self._guard = guard
        self._timeout = timeout
        self._max_idle = max(1, max_idle)
        self._idle: OrderedDict[tuple[str, int], list[_Connection]] = OrderedDict()  # host used last, last
        self._kept = 0  # connections in ``_idle``

    async def post(self, origin: Origin, request: bytes) -> Response:
        """POST ``request`` (head and body, ``Origin.head``) to ``origin``; ``TimeoutError`` after the
        timeout, ``UrlRefused`` for an address the guard refuses, ``HttpError`` or ``OSError`` else."""
        async with asyncio.timeout(self._timeout):
            connection = self._take(origin)
            if connection is not None:
                try:
                    return await self._exchange(origin, connection, request)
                except _Stale:
                    pass  # the server had closed it: once more on a new connection
            return await self._exchange(origin, await self._connect(origin), request)

    async def _exchange(self, origin: Origin, connection: _Connection, request: bytes) -> Response:
        try:
            response = await connection.exchange(request)
        except BaseException:
            connection.abort()  # an answer may still arrive: this connection cannot carry another request
            raise
        if connection.reusable:
            self._keep(origin, connection)
        else:
            connection.abort()
        return response

    def _keep(self, origin: Origin, connection: _Connection) -> None:
        """Keep ``connection`` for the next request to ``origin``; beyond ``max_idle`` kept in all, the
        oldest of the host used longest ago is closed (every kept connection holds a file descriptor)."""
        key = (origin.host, origin.port)
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
        else:
            self._idle.move_to_end(key)
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)
        self._kept += 1
        while self._kept > self._max_idle:
            oldest_key, oldest = next(iter(self._idle.items()))
            oldest.pop(0).abort()
            self._kept -= 1
            if not oldest:
                del self._idle[oldest_key]

    def _take(self, origin: Origin) -> _Connection | None:
        """The most recently used idle connection to ``origin`` still open; those found closed, or unused
        for ``IDLE`` seconds, on the way are dropped."""
        key = (origin.host, origin.port)
        idle = self._idle.get(key)
        if idle is None:
            return None
        horizon = asyncio.get_running_loop().time() - IDLE
        found = None
        while idle and found is None:
            connection = idle.pop()
            self._kept -= 1
            if connection.closed:
                continue
            if connection.idle_since < horizon:
                connection.abort()
                continue
            found = connection
        if not idle:
            del self._idle[key]
        return found

    async def _connect(self, origin: Origin) -> _Connection:
        addresses = await self._guard.check(f"https://{origin.netloc}/")
        loop = asyncio.get_running_loop()
        error: OSError | None = None
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    _Connection, address, origin.port, ssl=self._tls, server_hostname=origin.host
                )
                return connection
            except OSError as exc:  # ssl.SSLError included: try the next address
                error = exc
        raise error or OSError(f"{origin.host} has no address")

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        self._idle.clear()
        self._kept = 0
