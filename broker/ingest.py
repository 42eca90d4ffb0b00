"""Translation between MQTT payloads and the core: a PUBLISH on ``…/push`` to a ``PushRequest``, one on
``…/act`` to an ``ActionReport``, and a refusal to the JSON published on ``…/error``. No rule lives here."""

from __future__ import annotations

from gateway.actions import ActionReport
from gateway.errors import PushgateError, ValidationError
from gateway.json_input import parse_json_object
from gateway.json_output import compact_json
from gateway.request import PushRequest

__all__ = ["action_report", "error_payload", "push_request"]


def push_request(topic: str, payload: bytes, client_addr: str | None) -> PushRequest:
    """UTF-8 text is the message; a payload that starts with ``{`` is the HTTP JSON body's object."""
    try:
        text = payload.decode()
    except UnicodeDecodeError as exc:
        raise ValidationError("message", "the MQTT payload must be UTF-8 text or a JSON object") from exc
    if not text.lstrip().startswith("{"):
        return PushRequest(topic=topic, message=text, source="mqtt", client_addr=client_addr)
    body = parse_json_object(text, '{"message": "Sensor triggered!", "title": "Door"}')
    return PushRequest.from_fields(topic, body, source="mqtt", client_addr=client_addr)


def action_report(payload: bytes) -> ActionReport:
    """``…/act`` carries a JSON object ``{"message_id", "action_id", "reply_text"?, "device_id"?}``."""
    return ActionReport.from_fields(parse_json_object(payload, '{"message_id": "…", "action_id": "approve"}'))


def error_payload(exc: PushgateError) -> bytes:
    body = {"status": exc.status, **exc.to_dict()}
    return compact_json(body)
