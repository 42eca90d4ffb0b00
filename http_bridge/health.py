"""``GET /healthz``: the process is up and the database answers."""

from __future__ import annotations

from quart import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from http_bridge.state import gateway

__all__ = ["blueprint"]

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
async def healthz() -> Response:
    async with gateway(current_app).engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return jsonify({"status": "ok"})
