"""``POST /api/push/<topic>``: text, JSON and form bodies, header shortcuts and query parameters.

Field sources, later ones winning: query parameters, then headers (``Title``, ``Priority``, ``Tags``,
``Click``, also with an ``X-`` prefix as ntfy allows), then the body. A body sent as
``application/x-www-form-urlencoded`` is read as a form only when it has a ``message`` field; otherwise it
is the message text, because ``curl -d "Hello"`` sends plain text with that content type.

Every accepted push is answered with the ``X-RateLimit-*`` headers (a refused one, by the error handler).
A path segment with an API key's shape is PushStaq's ``/api/push/<key>/`` (``http_bridge.pushstaq``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from quart import Blueprint, Response, current_app, jsonify, request

from gateway import credentials
from gateway.errors import ValidationError
from gateway.json_input import parse_json_object
from gateway.request import PushRequest, PushResult
from http_bridge.auth import presented_credential
from http_bridge.errors import rate_limit_headers
from http_bridge.state import gateway

__all__ = ["blueprint", "push_answer", "request_fields"]

blueprint = Blueprint("push", __name__)

_SHORTCUTS = {"title": "title", "priority": "priority", "tags": "tags", "click": "click_url"}


def _shortcut_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "message" in request.args:
        fields["message"] = request.args["message"]
    for name, field in _SHORTCUTS.items():
        if name in request.args:
            fields[field] = request.args[name]
    for name, field in _SHORTCUTS.items():
        value = request.headers.get(name) or request.headers.get(f"X-{name}")
        if value is not None:
            fields[field] = value
    return fields


async def _body_fields() -> dict[str, Any]:
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        form = await request.form
        return dict(form.items())
    raw = await request.get_data(cache=False)
    if mimetype == "application/json" or mimetype.endswith("+json"):
        body = parse_json_object(raw, '{"message": "Hello"}')
        return {k: v for k, v in body.items() if k != "topic"}
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ValidationError("message", "the body must be UTF-8 text") from exc
    if mimetype == "application/x-www-form-urlencoded":
        form = parse_qs(text, keep_blank_values=True)
        if "message" in form:
            return {k: v[-1] for k, v in form.items()}
    return {"message": text} if text else {}


def _to_request(topic: str, fields: dict[str, Any]) -> PushRequest:
    fields.setdefault("message", None)
    if fields["message"] is None:
        fields["message"] = ""
    return PushRequest.from_fields(
        topic,
        fields,
        source="http",
        credential=presented_credential(),
        client_addr=request.remote_addr,
    )


async def request_fields() -> dict[str, Any]:
    """The push fields of this request: query parameters, header shortcuts, then the body."""
    fields = _shortcut_fields()
    fields.update(await _body_fields())
    return fields


def push_answer(result: PushResult) -> Response:
    """The push answer: the result as JSON, with the ``X-RateLimit-*`` headers."""
    response = jsonify(result.to_dict())
    if result.rate is not None:
        response.headers.update(rate_limit_headers(result.rate))
    return response


@blueprint.route("/api/push/<topic>", methods=["POST"], provide_automatic_options=False)
@blueprint.route("/api/push/<topic>/", methods=["POST"], provide_automatic_options=False)
async def push(topic: str) -> Response:
    if credentials.is_key(topic):  # PushStaq's /api/push/<key>/: no topic name has a key's shape
        from http_bridge.pushstaq import push_with_key  # pushstaq builds on this module

        return await push_with_key(topic)
    result = await gateway(current_app).publish(_to_request(topic, await request_fields()))
    return push_answer(result)
