"""The topics and keys management API (iotpush's "Topics API", PushStaq's channel key generate/revoke).

    GET    /api/topics                          the caller's topics, by name
    POST   /api/topics                          {"name", "description"?, "is_private"?}  -> 201
    PATCH  /api/topics/<id>                     any of name, description, is_private
    DELETE /api/topics/<id>                     the topic, its messages and its keys
    GET    /api/topics/<id>/keys                the topic's keys, never their secrets
    POST   /api/topics/<id>/keys                {"label"?} -> 201 with the secret, shown only here
    DELETE /api/topics/<id>/keys/<key_id>       revoke the key at once

Every endpoint needs a user token (``Authorization: Bearer <token>``) and acts only on the caller's own
topics; another user's topic is a 404, as an unknown id is. The bodies are JSON whatever the
Content-Type says (``curl -d '{"name": "x"}'`` sends a form type); an empty body is an empty object.
This module only translates: the rules, checks and errors are ``gateway.admin.Admin``'s.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, current_app, jsonify

from gateway.admin import Admin
from gateway.envelope import iso
from gateway.errors import Unauthorized
from gateway.storage.models import ApiKey, Topic
from http_bridge.auth import require_user
from http_bridge.bodies import json_object
from http_bridge.state import gateway

__all__ = ["blueprint"]

blueprint = Blueprint("topics", __name__, url_prefix="/api/topics")
_EXAMPLE = '{"name": "server-alerts"}'  # shown in the 400 for a body that is not an object


def _admin() -> Admin:
    return gateway(current_app).admin


async def _owner_id() -> str:
    who = await require_user()
    if not who.user_id:  # never for a user token; refused rather than matching ownerless topics
        raise Unauthorized("the user token names no user", error="Invalid token")
    return who.user_id


def _topic_json(topic: Topic, key_count: int) -> dict[str, Any]:
    return {
        "id": topic.id,
        "name": topic.name,
        "description": topic.description,
        "is_private": topic.is_private,
        "created_at": iso(topic.created_at),
        "key_count": key_count,
    }


def _key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "label": key.label,
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at) if key.last_used_at else None,
        "revoked_at": iso(key.revoked_at) if key.revoked_at else None,
    }


def _created(body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.status_code = 201
    return response


# Collections answer with and without the trailing slash: a POST is never redirected.
@blueprint.get("")
@blueprint.get("/")
async def list_topics() -> Response:
    rows = await _admin().list_topics(owner_id=await _owner_id())
    return jsonify({"topics": [_topic_json(topic, keys) for topic, keys in rows]})


@blueprint.post("")
@blueprint.post("/")
async def create_topic() -> Response:
    owner_id = await _owner_id()
    topic = await _admin().create_user_topic(owner_id, await json_object(_EXAMPLE))
    return _created(_topic_json(topic, 0))


@blueprint.patch("/<topic_id>")
async def update_topic(topic_id: str) -> Response:
    owner_id = await _owner_id()
    topic, keys = await _admin().update_user_topic(owner_id, topic_id, await json_object(_EXAMPLE))
    return jsonify(_topic_json(topic, keys))


@blueprint.delete("/<topic_id>")
async def delete_topic(topic_id: str) -> Response:
    topic, messages = await _admin().delete_user_topic(await _owner_id(), topic_id)
    return jsonify({"id": topic.id, "name": topic.name, "deleted": True, "messages_deleted": messages})


@blueprint.get("/<topic_id>/keys")
@blueprint.get("/<topic_id>/keys/")
async def list_keys(topic_id: str) -> Response:
    keys = await _admin().list_topic_keys(await _owner_id(), topic_id)
    return jsonify({"keys": [_key_json(key) for key in keys]})


@blueprint.post("/<topic_id>/keys")
@blueprint.post("/<topic_id>/keys/")
async def create_key(topic_id: str) -> Response:
    owner_id = await _owner_id()
    issued = await _admin().create_topic_key(owner_id, topic_id, await json_object(_EXAMPLE))
    key = issued.key
    return _created(
        {"id": key.id, "key": issued.secret, "label": key.label, "created_at": iso(key.created_at)}
    )


@blueprint.delete("/<topic_id>/keys/<key_id>")
async def revoke_key(topic_id: str, key_id: str) -> Response:
    key = await _admin().revoke_topic_key(await _owner_id(), topic_id, key_id)
    return jsonify(_key_json(key))
