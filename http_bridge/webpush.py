"""``GET /api/webpush/vapid-public-key``: the key a page passes to ``pushManager.subscribe()``.

    GET /api/webpush/vapid-public-key   -> {"public_key": "<base64url, no padding, 65-byte point>"}

No credential is needed: the key is public by design (every push request carries it), and a page asks
for it before anyone has subscribed. The value is base64url of the uncompressed P-256 point (``0x04 ||
x || y``); a page turns it into the ``Uint8Array`` ``applicationServerKey`` takes. It stays the same
across restarts (``gateway.vapid``). The subscription is then registered with ``POST /api/devices``.
"""

from __future__ import annotations

from quart import Blueprint, Response, current_app, jsonify

from http_bridge.state import gateway

__all__ = ["blueprint"]

blueprint = Blueprint("webpush", __name__, url_prefix="/api/webpush")


@blueprint.get("/vapid-public-key")
@blueprint.get("/vapid-public-key/")
async def vapid_public_key() -> Response:
    return jsonify({"public_key": gateway(current_app).webpush.public_key})
