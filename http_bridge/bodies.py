"""Request bodies: the request's JSON object through the core's one parser (``gateway.json_input``)."""

from __future__ import annotations

from typing import Any

from quart import request

from gateway.json_input import parse_json_object

__all__ = ["json_object"]


async def json_object(example: str) -> dict[str, Any]:
    """The request's JSON object whatever its Content-Type (``curl -d`` sends a form type); empty is {}."""
    raw = await request.get_data(cache=False)
    return parse_json_object(raw, example) if raw.strip() else {}
