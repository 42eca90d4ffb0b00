"""Credentials on HTTP: where a key or token may be presented, and resolving it through the core."""

from __future__ import annotations

from quart import current_app, request

from gateway.access import Principal
from gateway.errors import Unauthorized
from http_bridge.state import gateway

__all__ = ["presented_credential", "principal", "require_user"]


def presented_credential() -> str | None:
    """The API key or token from ``Authorization: Bearer``, ``x-api-key`` or ``api-key``."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or request.headers.get("api-key") or None


async def principal() -> Principal:
    """Who is asking: anonymous, a topic key or a user (an invalid credential is 401)."""
    return await gateway(current_app).access.authenticate(presented_credential())


async def require_user() -> Principal:
    """For the management API: a user token is required."""
    who = await principal()
    if who.kind != "user":
        raise Unauthorized(
            "this endpoint needs a user token: Authorization: Bearer <token> (pushgate user create NAME)",
            error="Invalid token",
        )
    return who
