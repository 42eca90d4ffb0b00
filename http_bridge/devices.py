"""The devices API (iotpush's "Devices"): the push targets apps and browsers register.

    POST   /api/devices         {"platform", "push_token" | "subscription", "device_name"?, "app_version"?,
                                 "external_id"?, "tags"?, "topics"?}  -> 201 new, 200 updated
    GET    /api/devices         {"devices": [...]}: the caller's devices, most recently seen first
    DELETE /api/devices/<id>    removes the device

Every endpoint needs a user token (``Authorization: Bearer <token>``) and acts only on the caller's own
devices; another user's device is a 404, as an unknown id is. Each path answers with and without a
trailing slash, never with a redirect. Bodies are JSON whatever the Content-Type says; an empty body is an
empty object. This module only translates: the rules, checks, errors and the answer's shape (which never
shows a token, endpoint or key) are ``gateway.devices``'.
"""

from __future__ import annotations

from quart import Blueprint, Response, current_app, jsonify

from gateway.devices import Devices
from http_bridge.auth import require_user
from http_bridge.bodies import json_object
from http_bridge.state import gateway

__all__ = ["blueprint"]

blueprint = Blueprint("devices", __name__, url_prefix="/api/devices")
# shown in the 400 for a body that is not an object
_EXAMPLE = '{"platform": "ios", "push_token": "ExponentPushToken[...]"}'


def _devices() -> Devices:
    return gateway(current_app).devices


@blueprint.get("")
@blueprint.get("/")
async def list_devices() -> Response:
    who = await require_user()
    return jsonify({"devices": await _devices().list_devices(who)})


@blueprint.post("")
@blueprint.post("/")
async def register_device() -> Response:
    who = await require_user()
    registered = await _devices().register(who, await json_object(_EXAMPLE))
    response = jsonify(registered.device)
    response.status_code = 201 if registered.created else 200
    return response


@blueprint.delete("/<device_id>")
@blueprint.delete("/<device_id>/")
async def delete_device(device_id: str) -> Response:
    who = await require_user()
    return jsonify(await _devices().delete(who, device_id))
