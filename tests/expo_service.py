"""A local Expo-compatible push API on 127.0.0.1, speaking Expo's protocol as the SDK meets it.

- ``POST /--/api/v2/push/send``: a JSON array of notifications (or one object) -> ``{"data": [ticket, ...]}``,
  a ticket per notification in order: ``{"status": "ok", "id": "<uuid>"}`` or
  ``{"status": "error", "message": ..., "details": {"error": "DeviceNotRegistered", ...}}``.
- ``POST /--/api/v2/push/getReceipts``: ``{"ids": [...]}`` -> ``{"data": {id: receipt}}``; an id without
  a receipt yet is left out, as Expo does.
- Whole-request errors as Expo sends them: ``{"errors": [{"code", "message"}]}`` with 400 (more than 100
  notifications, more than 1000 ids, a body that is not JSON), 429 (with ``Retry-After``) or 5xx.
- Request bodies may be gzip-encoded (``Content-Encoding: gzip``); answers are gzip-encoded when the
  client accepts it (the SDK sends ``accept-encoding: gzip, deflate``). Connections are kept alive.

Tests script it: ``ticket_errors``/``receipt_errors`` by token (a list is used up one answer at a time;
a plain string applies every time), ``send_statuses`` (statuses of the next send requests),
``receipts_ready``. It records every request (``sends``, ``receipt_requests``) with its headers and
arrival time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import uuid
from typing import Any

MAX_NOTIFICATIONS = 100
MAX_RECEIPT_IDS = 1000
API = "/--/api/v2"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Busy",
}
_MESSAGES = {
    "DeviceNotRegistered": '"{token}" is not a registered push notification recipient',
    "MessageRateExceeded": "Too many messages are being sent to this device; slow down",
    "MessageTooBig": "The notification payload is too large",
}


@dataclasses.dataclass
class Request:
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # the parsed JSON
    at: float  # loop time of arrival


class ExpoService:
    def __init__(self) -> None:
        self.ticket_errors: dict[str, str | list[str | None]] = {}
        self.receipt_errors: dict[str, str | list[str | None]] = {}
        self.send_statuses: list[int] = []
        self.retry_after = 1
        self.receipts_ready = True
        self.sends: list[Request] = []
        self.receipt_requests: list[Request] = []
        self.tickets: dict[str, str] = {}  # ok ticket id -> token
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    def messages(self) -> list[dict[str, Any]]:
        """Every notification that reached the service, in order of arrival."""
        return [
            message
            for request in self.sends
            if request.path.endswith("/push/send")
            for message in request.body
        ]

    def sent_to(self, token: str) -> list[dict[str, Any]]:
        return [message for message in self.messages() if message.get("to") == token]

    async def start(self) -> ExpoService:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on the connection
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                except asyncio.IncompleteReadError:
                    return
                request_line, *lines = head.split("\r\n")
                method, path, _version = request_line.split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines:
                    if line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                if headers.get("content-encoding") == "gzip":
                    raw = gzip.decompress(raw)
                status, body, extra = self._answer(method, path, headers, raw)
                data = json.dumps(body).encode()
                out = {"Content-Type": "application/json; charset=utf-8", **extra}
                if "gzip" in headers.get("accept-encoding", ""):
                    data = gzip.compress(data)
                    out["Content-Encoding"] = "gzip"
                out["Content-Length"] = str(len(data))
                head_out = f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                head_out += "".join(f"{name}: {value}\r\n" for name, value in out.items())
                writer.write(head_out.encode() + b"\r\n" + data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if method != "POST":
            return 405, _errors("METHOD_NOT_ALLOWED", f"{method} is not supported"), {}
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, _errors("VALIDATION_ERROR", "the request body must be JSON"), {}
        request = Request(path, headers, body, asyncio.get_running_loop().time())
        if path == f"{API}/push/send":
            self.sends.append(request)
            return self._send(body)
        if path == f"{API}/push/getReceipts":
            self.receipt_requests.append(request)
            return self._receipts(body)
        return 404, _errors("NOT_FOUND", f"no route {path}"), {}

    def _send(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        if self.send_statuses:
            status = self.send_statuses.pop(0)
            if status == 429:
                message = "Too many requests: the project exceeded 600 notifications per second"
                return 429, _errors("TOO_MANY_REQUESTS", message), {"Retry-After": str(self.retry_after)}
            if status == 400:
                return (
                    400,
                    _errors("VALIDATION_ERROR", 'child "data" fails because ["data" must be an object]'),
                    {},
                )
            if status != 200:
                return status, _errors("INTERNAL_SERVER_ERROR", "An unknown error occurred."), {}
        messages = body if isinstance(body, list) else [body]
        if len(messages) > MAX_NOTIFICATIONS:
            text = f"You are trying to send more than {MAX_NOTIFICATIONS} push notifications in one request"
            return 400, _errors("PUSH_TOO_MANY_NOTIFICATIONS", text), {}
        if not all(isinstance(m, dict) and isinstance(m.get("to"), str) for m in messages):
            return 400, _errors("VALIDATION_ERROR", '"to" must be a string'), {}
        return 200, {"data": [self._ticket(m["to"]) for m in messages]}, {}

    def _ticket(self, token: str) -> dict[str, Any]:
        error = _next(self.ticket_errors.get(token))
        if error is not None:
            return {
                "status": "error",
                "message": _MESSAGES.get(error, error).format(token=token),
                "details": {"error": error, "expoPushToken": token},
            }
        ticket_id = str(uuid.uuid4())
        self.tickets[ticket_id] = token
        return {"status": "ok", "id": ticket_id}

    def _receipts(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return 400, _errors("VALIDATION_ERROR", '"ids" must be an array of strings'), {}
        if len(ids) > MAX_RECEIPT_IDS:
            text = f"You are trying to get more than {MAX_RECEIPT_IDS} push receipts in one request"
            return 400, _errors("PUSH_TOO_MANY_RECEIPTS", text), {}
        data: dict[str, Any] = {}
        if self.receipts_ready:
            for ticket_id in ids:
                token = self.tickets.get(ticket_id)
                if token is None:
                    continue  # unknown or expired: Expo leaves it out
                error = _next(self.receipt_errors.get(token))
                if error is None:
                    data[ticket_id] = {"status": "ok"}
                else:
                    data[ticket_id] = {
                        "status": "error",
                        "message": "The Apple Push Notification service failed to send the notification",
                        "details": {"error": error},
                    }
        return 200, {"data": data}, {}


def _next(scripted: str | list[str | None] | None) -> str | None:
    """A scripted error: a list answers one item per call, then nothing; a string answers every call."""
    if isinstance(scripted, list):
        return scripted.pop(0) if scripted else None
    return scripted


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}
