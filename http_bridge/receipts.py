"""``GET /api/receipts/<receipt_id>`` and ``GET /api/receipts``: the iotpush receipts API.

A thin translation: the credential from the request, the query string as given, the answer as JSON.
Who may read which receipt, the filters, and the pagination live in ``gateway.receipts``. Both paths
also answer with a trailing slash, so clients that add one are not redirected.
"""

from __future__ import annotations

from quart import Blueprint, Response, current_app, jsonify, request

from http_bridge.auth import principal
from http_bridge.state import gateway

__all__ = ["blueprint"]

blueprint = Blueprint("receipts", __name__)


@blueprint.get("/api/receipts/<receipt_id>")
@blueprint.get("/api/receipts/<receipt_id>/")
async def get_receipt(receipt_id: str) -> Response:
    who = await principal()
    return jsonify(await gateway(current_app).receipts.get(who, receipt_id))


@blueprint.get("/api/receipts")
@blueprint.get("/api/receipts/")
async def list_receipts() -> Response:
    who = await principal()
    page = await gateway(current_app).receipts.page(who, request.args)
    return jsonify(page.to_dict())
