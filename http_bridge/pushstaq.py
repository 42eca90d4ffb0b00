"""PushStaq's channel API: ``POST /api/push/`` with the channel's key in ``x-api-key`` or ``api-key``, and
``POST /api/push/<key>/`` for services that cannot set headers (IFTTT).

The key alone names the channel: the message is posted to the key's topic (``Access.key_topic``), source
``pushstaq``, as PushStaq posts it as the channel's bot. The body is read as ``/api/push/<topic>`` reads it:
PushStaq's JSON ``{"message": "…"}``, and also text, forms and the header shortcuts. PushStaq documents no
answer, so it is the push answer (``{"success", "id", …}`` with the ``X-RateLimit-*`` headers); errors are
pushgate's ``{"error", "message"}``: a missing, unknown or revoked key is 401.

Path rule: ``/api/push/<segment>`` is a key when the segment has an API key's shape
(``credentials.is_key``: ``pk_<12 characters>_…``), otherwise a topic name. No topic may be named in that
shape (``gateway.topics``), so the two never collide, and a mistyped or revoked key in the path is a 401,
not a 404 for an unknown topic. Keys are made and revoked with the topic key API
(``/api/topics/<id>/keys``); a key that keeps exceeding its rate limit can be revoked automatically
(``gateway.autorevoke``).
"""

from __future__ import annotations

from quart import Blueprint, Response, current_app, request

from gateway.request import PushRequest
from http_bridge.auth import presented_credential
from http_bridge.push import push_answer, request_fields
from http_bridge.state import gateway

__all__ = ["blueprint", "push_with_key"]

blueprint = Blueprint("pushstaq", __name__)


@blueprint.route("/api/push", methods=["POST"], provide_automatic_options=False)
@blueprint.route("/api/push/", methods=["POST"], provide_automatic_options=False)
async def push_with_header_key() -> Response:
    return await push_with_key(presented_credential())


async def push_with_key(key: str | None) -> Response:
    """Post this request's message to the channel ``key`` belongs to."""
    gw = gateway(current_app)
    principal, topic = await gw.access.key_topic(key)
    fields = await request_fields()
    req = PushRequest.from_fields(topic.name, fields, source="pushstaq", client_addr=request.remote_addr)
    if req.message is None:
        req.message = ""
    return push_answer(await gw.publish(req, principal))
