"""Instapush's REST API (``api-docs/instapush.txt``): apps, events and posts, under ``/v1`` and, for "the
latest version", without it.

    GET  /v1/apps/list      x-instapush-token                          -> [{"title", "appID", "appSecret"}]
    POST /v1/apps/add       x-instapush-token, {"title"}               -> 201 {"msg", "id", "secret", ...}
    GET  /v1/events/list    x-instapush-appid, x-instapush-appsecret   -> [{"title", "trackers"}]
    POST /v1/events/add     ... {"title", "trackers", "message"}       -> 201 {"msg", "error": false, ...}
    POST /v1/post           ... {"event", "trackers"}                  -> 201 {"msg", "error": false, ...}

This module only translates; the model (apps are topics, secrets are keys, events are stored patterns) is
``gateway.instapush``'s. Answers are Instapush's, word for word (its spelling "Succesfully" included), with
the HTTP status equal to ``status``. Every error raised by these handlers is ``{"msg", "error": true,
"status"}`` with that status; a 429 keeps the ``Retry-After`` and ``X-RateLimit-*`` headers.

Bodies are JSON whatever the Content-Type says. Instapush's own ``events/add`` example is missing the
final ``}`` of its body; so that it works as printed, a JSON object whose only fault is that it stops
before its closing brackets is completed. Nothing else is repaired.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from gateway.errors import PushgateError, RateLimited
from gateway.instapush import App, Instapush
from gateway.json_input import parse_json_object
from http_bridge.errors import rate_limit_headers
from http_bridge.state import gateway

__all__ = ["blueprint", "complete_json"]

blueprint = Blueprint("instapush", __name__)

_CLOSERS = {"{": "}", "[": "]"}


def _answer(body: Any, status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _done(msg: str, status: int = 201, **extra: Any) -> Response:
    return _answer({"msg": msg, **extra, "error": False, "status": status}, status)


def _failed(msg: str, status: int) -> Response:
    return _answer({"msg": msg, "error": True, "status": status}, status)


@blueprint.errorhandler(PushgateError)
async def _pushgate_error(exc: PushgateError) -> Response:
    response = _failed(exc.message, exc.status)
    if isinstance(exc, RateLimited):
        response.headers.update(rate_limit_headers(exc.rate))
    return response


@blueprint.errorhandler(HTTPException)
async def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = {413: "The request body is larger than the configured limit ([http] max_body_bytes)."}
    return _failed(message.get(status, exc.description or exc.name), status)


def complete_json(text: str) -> str | None:
    """``text`` with the closing brackets it lacks at its end, or ``None`` if that is not its only fault
    (it ends inside a string, or a bracket is closed that was never opened)."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _CLOSERS:
            stack.append(_CLOSERS[char])
        elif char in "}]":
            if not stack or stack.pop() != char:
                return None
    if in_string or not stack:
        return None
    return text.rstrip().rstrip(",") + "".join(reversed(stack))


async def _body() -> dict[str, Any]:
    raw = await request.get_data(cache=False)
    if not raw.strip():
        return {}
    try:
        json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        completed = complete_json(raw.decode(errors="replace"))
        if completed is not None:
            try:
                return parse_json_object(completed, "{}")
            except PushgateError:
                pass
    return parse_json_object(raw, '{"event": "signups", "trackers": {"email": "a@example.com"}}')


def _core() -> Instapush:
    return gateway(current_app).instapush


def _route(
    path: str, method: str
) -> Callable[[Callable[[], Awaitable[Response]]], Callable[[], Awaitable[Response]]]:
    """Register a view under ``/v1`` and without it ("the latest version"), each with and without a
    trailing slash (a POST is never redirected; ``strict_slashes=False`` would answer a GET 404, not 405)."""

    def register(view: Callable[[], Awaitable[Response]]) -> Callable[[], Awaitable[Response]]:
        for rule in (f"/v1{path}", f"/v1{path}/", path, f"{path}/"):
            blueprint.add_url_rule(
                rule, view.__name__, view, methods=[method], provide_automatic_options=False
            )
        return view

    return register


@_route("/apps/list", "GET")
async def apps_list() -> Response:
    core = _core()
    return _answer(await core.apps(await core.user(request.headers.get("x-instapush-token"))))


@_route("/apps/add", "POST")
async def apps_add() -> Response:
    core = _core()
    owner_id = await core.user(request.headers.get("x-instapush-token"))  # before the body: 401 first
    created = await core.add_app(owner_id, await _body())
    return _done("App Created Successfully", id=created.id, secret=created.secret)


async def _app() -> App:
    return await _core().app(
        request.headers.get("x-instapush-appid"), request.headers.get("x-instapush-appsecret")
    )


@_route("/events/list", "GET")
async def events_list() -> Response:
    return _answer(await _core().events(await _app()))


@_route("/events/add", "POST")
async def events_add() -> Response:
    app = await _app()
    await _core().add_event(app, await _body())
    return _done("Event Created Succesfully")


@_route("/post", "POST")
async def post() -> Response:
    app = await _app()
    result = await _core().post(app, await _body(), request.remote_addr)
    response = _done("Notification Sent Succesfully")
    if result.rate is not None:
        response.headers.update(rate_limit_headers(result.rate))
    return response
