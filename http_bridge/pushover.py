"""Pushover's API on pushgate: ``POST /1/messages.json`` (also ``/api/1/messages.json`` and
``/api/pushover``), receipts and their cancelling, ``limits.json`` and ``users/validate.json``.

A thin edge: fields come from the query string and the body (URL-encoded, multipart or JSON; the body
wins), the attachment from the multipart file ``attachment`` or from ``attachment_base64`` plus
``attachment_type``. The rules (fields, limits, quota, emergencies) are the core's (``gateway.pushover``,
``gateway.emergency``); every message goes through ``Gateway.publish``. Answers are Pushover's:
``{"status": 1, "request": "<uuid>"}`` (plus ``receipt`` for an emergency), and errors
``{"<field>": "invalid", "errors": ["…"], "status": 0, "request": "<uuid>"}`` with a 4xx status; the
core's typed errors are translated to that shape here, once (``_render``). Every answer carries
``X-Limit-App-Limit``, ``X-Limit-App-Remaining`` and ``X-Limit-App-Reset`` (the monthly quota; a token
that is not valid is shown the full quota).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from typing import Any
from urllib.parse import parse_qsl

from quart import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from gateway.access import Principal, TopicInfo
from gateway.emergency import new_receipt_id
from gateway.errors import PayloadTooLarge, PushgateError, RateLimited, Unavailable, ValidationError
from gateway.json_input import parse_json_object
from gateway.pushover import parse_message
from http_bridge.errors import rate_limit_headers
from http_bridge.state import gateway

__all__ = ["LARGE_BODY_PATHS", "blueprint"]

blueprint = Blueprint("pushover", __name__)

_MESSAGE_PATHS = ("/1/messages.json", "/api/1/messages.json", "/api/pushover")
# The paths that take attachments, with and without the trailing slash: their body limit is raised.
LARGE_BODY_PATHS = tuple(p for path in _MESSAGE_PATHS for p in (path, path + "/"))
# Core field names back to Pushover's, for errors the core raises.
_FIELDS = {"click_url": "url", "image_url": "attachment", "callback_url": "callback"}
_EXAMPLE = '{"token": "…", "user": "…", "message": "Hello"}'


@blueprint.before_request
async def _start() -> None:
    g.pushover_request = str(uuid.uuid4())
    g.pushover_topic = None


@blueprint.after_request
async def _limit_headers(response: Response) -> Response:
    quota = await gateway(current_app).pushover_quota.state(g.get("pushover_topic"))
    response.headers["X-Limit-App-Limit"] = str(quota.limit)
    response.headers["X-Limit-App-Remaining"] = str(quota.remaining)
    response.headers["X-Limit-App-Reset"] = str(quota.reset)
    return response


def _answer(body: dict[str, Any] | None = None) -> Response:
    return jsonify({"status": 1, "request": g.pushover_request, **(body or {})})


def _error(status: int, message: str, field: str | None = None, value: str = "invalid") -> Response:
    body: dict[str, Any] = {field: value} if field else {}
    body.update({"errors": [message], "status": 0, "request": g.pushover_request})
    response = jsonify(body)
    response.status_code = status
    return response


@blueprint.errorhandler(PushgateError)
async def _render(exc: PushgateError) -> Response:
    """The core's typed errors in Pushover's shape."""
    if isinstance(exc, ValidationError):
        field = _FIELDS.get(exc.field, exc.field.split("[", 1)[0])
        if exc.field.startswith("actions"):
            field = "url_title"
        message = exc.message.replace(exc.field, field) if exc.field in _FIELDS else exc.message
        value = exc.error if exc.error in ("invalid", "cannot be blank") else "invalid"
        return _error(exc.status, message, field, value)
    if isinstance(exc, PayloadTooLarge):
        return _error(413, exc.message, "attachment")
    if exc.status == 401:
        return _error(400, "application token is invalid", "token")
    if exc.status == 403:
        return _error(400, "user identifier is invalid", "user")
    if exc.status == 404 and exc.error == "not found":
        return _error(404, exc.message, "receipt", "not found")
    # Pushover's clients retry a 5xx later: a storage refusal keeps its 503 (with Retry-After) for them
    response = _error(exc.status if 400 <= exc.status < 500 or exc.status == 503 else 500, exc.message)
    if isinstance(exc, RateLimited):
        response.headers.update(rate_limit_headers(exc.rate))
    elif isinstance(exc, Unavailable):
        response.headers["Retry-After"] = "1"
    return response


@blueprint.errorhandler(HTTPException)
async def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        return _error(413, f"the request body is larger than {limit} bytes", "attachment")
    return _error(exc.code or 400, exc.description or exc.name)


async def _fields(*, files: bool = False) -> tuple[dict[str, Any], tuple[bytes, str] | None]:
    """The request's fields, the body's over the query's, and the multipart ``attachment`` if any."""
    fields: dict[str, Any] = dict(request.args.items())
    upload = None
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        form = await request.form
        fields.update(form.items())
        attachment = (await request.files).get("attachment") if files else None
        if attachment is not None:
            data = await asyncio.to_thread(attachment.read)
            upload = (data, attachment.mimetype or "application/octet-stream")
        return fields, upload
    raw = await request.get_data(cache=False)
    if not raw.strip():
        return fields, None
    if mimetype == "application/json" or mimetype.endswith("+json"):
        fields.update(parse_json_object(raw, _EXAMPLE))
        return fields, None
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ValidationError("message", "the body must be UTF-8 form fields", error="invalid") from exc
    fields.update(parse_qsl(text, keep_blank_values=True))
    return fields, None


def _base64_attachment(fields: dict[str, Any]) -> tuple[bytes, str] | None:
    encoded = fields.get("attachment_base64")
    if encoded is None or encoded == "":
        return None
    if not isinstance(encoded, str):
        raise ValidationError("attachment_base64", "attachment_base64 must be a string", error="invalid")
    content_type = fields.get("attachment_type")
    if not isinstance(content_type, str) or not content_type:
        raise ValidationError(
            "attachment_type", "attachment_type is required with attachment_base64", error="invalid"
        )
    # A client that did not URL-encode its form turns "+" into spaces; base64 never holds spaces.
    compact = "".join(encoded.replace(" ", "+").split())
    size = len(compact) * 3 // 4 - compact[-2:].count("=")
    if size > gateway(current_app).attachments.max_bytes:
        gateway(current_app).attachments.check(size, content_type)  # refused before decoding it
    try:
        return base64.b64decode(compact, validate=True), content_type
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(
            "attachment_base64", "attachment_base64 is not valid base64", error="invalid"
        ) from exc


async def _application(fields: dict[str, Any], *, user_required: bool = False) -> tuple[Principal, TopicInfo]:
    principal, topic = await gateway(current_app).pushover_apps.resolve(
        fields.get("token"), fields.get("user"), user_required=user_required
    )
    g.pushover_topic = topic.id
    return principal, topic


@blueprint.post("/1/messages.json", provide_automatic_options=False)
@blueprint.post("/1/messages.json/", provide_automatic_options=False)
@blueprint.post("/api/1/messages.json", provide_automatic_options=False)
@blueprint.post("/api/1/messages.json/", provide_automatic_options=False)
@blueprint.post("/api/pushover", provide_automatic_options=False)
@blueprint.post("/api/pushover/", provide_automatic_options=False)
async def messages() -> Response:
    gw = gateway(current_app)
    fields, upload = await _fields(files=True)
    principal, topic = await _application(fields)
    parsed = parse_message(fields, topic=topic.name, credential=None, client_addr=request.remote_addr)
    attachment = upload or _base64_attachment(fields)
    if attachment is not None:
        gw.attachments.check(len(attachment[0]), attachment[1])
    await gw.pushover_quota.take(topic.id)
    stored = None
    try:
        if attachment is not None:
            stored = await gw.attachments.save(*attachment)
            parsed.request.image_url = f"{request.host_url.rstrip('/')}/api/attachments/{stored.id}"
        receipt = new_receipt_id() if parsed.emergency is not None else None
        emergency = parsed.emergency
        extra = (
            (lambda message: [gw.emergencies.receipt_row(receipt, emergency, message)])
            if receipt is not None and emergency is not None
            else None
        )
        result = await gw.publish(parsed.request, principal, extra=extra)
    except Exception:
        gw.pushover_quota.give_back(topic.id)
        if stored is not None:
            await gw.attachments.discard(stored.id)
        raise
    if receipt is not None:
        gw.emergencies.wake()
    response = _answer({"receipt": receipt} if receipt else None)
    if result.rate is not None:
        response.headers.update(rate_limit_headers(result.rate))
    return response


@blueprint.get("/1/apps/limits.json")
async def limits() -> Response:
    fields, _ = await _fields()
    _, topic = await _application(fields)
    quota = await gateway(current_app).pushover_quota.state(topic.id)
    return _answer({"limit": quota.limit, "remaining": quota.remaining, "reset": quota.reset})


@blueprint.get("/1/receipts/<receipt>.json")
async def receipt_status(receipt: str) -> Response:
    fields, _ = await _fields()
    principal, _ = await _application(fields)
    status = await gateway(current_app).emergencies.status(principal, receipt)
    return jsonify({**status, "request": g.pushover_request})


@blueprint.post("/1/receipts/<receipt>/cancel.json")
async def cancel(receipt: str) -> Response:
    fields, _ = await _fields()
    principal, _ = await _application(fields)
    await gateway(current_app).emergencies.cancel(principal, receipt)
    return _answer()


@blueprint.post("/1/receipts/cancel_by_tag/<tag>.json")
async def cancel_by_tag(tag: str) -> Response:
    fields, _ = await _fields()
    _, topic = await _application(fields)
    cancelled = await gateway(current_app).emergencies.cancel_by_tag(topic.id, tag)
    return _answer({"canceled": cancelled})


@blueprint.post("/1/users/validate.json")
async def validate_user() -> Response:
    fields, _ = await _fields()
    _, topic = await _application(fields, user_required=True)
    apps = gateway(current_app).pushover_apps
    devices = await apps.devices(topic)
    device = fields.get("device")
    if device and device not in [name for name, _ in devices]:
        raise ValidationError("device", "device name is not valid for user", error="invalid")
    return _answer({"group": 0, "devices": [name for name, _ in devices], "licenses": apps.licenses(devices)})
