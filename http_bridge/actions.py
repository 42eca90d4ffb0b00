"""``POST /api/action`` (iotpush's "Report Action": a tapped button or a typed reply) and ``POST /api/read``
(a client showed the message to its user)."""

from __future__ import annotations

from quart import Blueprint, Response, current_app, jsonify

from gateway.actions import ActionReport
from http_bridge.auth import principal
from http_bridge.bodies import json_object
from http_bridge.state import gateway

__all__ = ["blueprint"]

blueprint = Blueprint("actions", __name__)
_EXAMPLE = '{"message_id": "…", "action_id": "approve", "reply_text": null}'


@blueprint.post("/api/action")
@blueprint.post("/api/action/")
async def report_action() -> Response:
    who = await principal()
    body = await json_object(_EXAMPLE)
    return jsonify(await gateway(current_app).actions.report(who, ActionReport.from_fields(body)))


@blueprint.post("/api/read")
@blueprint.post("/api/read/")
async def mark_read() -> Response:
    who = await principal()
    body = await json_object('{"message_id": "…"}')
    actions = gateway(current_app).actions
    return jsonify(await actions.read(who, body.get("message_id"), body.get("device_id")))
