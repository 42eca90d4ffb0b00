"""The webhooks API (iotpush's "Webhooks"): where a user's topic events are POSTed.

    GET    /api/webhooks                     {"webhooks": [...]}: the caller's webhooks, never their secrets
    POST   /api/webhooks                     {"url", "events", "topic_ids"?, "active"?} -> 201 with "secret",
                                             shown only here
    PATCH  /api/webhooks/<id>                any of url, events, topic_ids, active
    DELETE /api/webhooks/<id>                the webhook and its delivery log
    POST   /api/webhooks/<id>/test           sends a signed "test" event now; says how the target answered
    GET    /api/webhooks/<id>/deliveries     the delivery log, newest first (?limit=, ?state=)
    GET    /api/webhooks/callback-secret     the secret the caller's messages' callback_url POSTs are
                                             signed with

Every endpoint needs a user token (``Authorization: Bearer <token>``) and acts only on the caller's own
webhooks; another user's webhook is a 404, as an unknown id is. Each path answers with and without a
trailing slash, never with a redirect. Bodies are JSON whatever the Content-Type says; an empty body is an
empty object. This module only translates: the rules, checks, errors and answers are
``gateway.webhooks``'.
"""

from __future__ import annotations

from quart import Blueprint, Response, current_app, jsonify, request

from gateway.webhooks import Webhooks
from http_bridge.auth import require_user
from http_bridge.bodies import json_object
from http_bridge.state import gateway

__all__ = ["blueprint"]

blueprint = Blueprint("webhooks", __name__, url_prefix="/api/webhooks")
_EXAMPLE = '{"url": "https://hub.lan/hooks/pushgate", "events": ["action"]}'


def _webhooks() -> Webhooks:
    return gateway(current_app).webhooks


@blueprint.get("")
@blueprint.get("/")
async def list_webhooks() -> Response:
    who = await require_user()
    return jsonify({"webhooks": await _webhooks().list_webhooks(who)})


@blueprint.post("")
@blueprint.post("/")
async def create_webhook() -> Response:
    who = await require_user()
    created = await _webhooks().create(who, await json_object(_EXAMPLE))
    response = jsonify({**created.webhook, "secret": created.secret})
    response.status_code = 201
    return response


@blueprint.get("/callback-secret")
@blueprint.get("/callback-secret/")
async def callback_secret() -> Response:
    who = await require_user()
    return jsonify(await _webhooks().user_callback_secret(who))


@blueprint.patch("/<webhook_id>")
@blueprint.patch("/<webhook_id>/")
async def update_webhook(webhook_id: str) -> Response:
    who = await require_user()
    return jsonify(await _webhooks().update(who, webhook_id, await json_object(_EXAMPLE)))


@blueprint.delete("/<webhook_id>")
@blueprint.delete("/<webhook_id>/")
async def delete_webhook(webhook_id: str) -> Response:
    who = await require_user()
    return jsonify(await _webhooks().delete(who, webhook_id))


@blueprint.post("/<webhook_id>/test")
@blueprint.post("/<webhook_id>/test/")
async def test_webhook(webhook_id: str) -> Response:
    who = await require_user()
    return jsonify(await _webhooks().test(who, webhook_id))


@blueprint.get("/<webhook_id>/deliveries")
@blueprint.get("/<webhook_id>/deliveries/")
async def list_deliveries(webhook_id: str) -> Response:
    who = await require_user()
    return jsonify(await _webhooks().deliveries(who, webhook_id, request.args))
