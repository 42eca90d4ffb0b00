"""Request bodies: one place that turns bytes into a JSON object or a 400 naming the problem."""

from __future__ import annotations

import json
from typing import Any

from quart import request

from gateway.errors import ValidationError

__all__ = ["json_object", "parse_json_object"]


def parse_json_object(raw: bytes, example: str) -> dict[str, Any]:
    """``raw`` as a JSON object; ``example`` shows the caller what an object for this endpoint looks like."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError("body", f"the body is not valid JSON: {exc}", error="Malformed JSON") from exc
    if not isinstance(body, dict):
        raise ValidationError("body", f"the JSON body must be an object, e.g. {example}")
    return body


async def json_object(example: str) -> dict[str, Any]:
    """The request's JSON object whatever its Content-Type (``curl -d`` sends a form type); empty is {}."""
    raw = await request.get_data(cache=False)
    return parse_json_object(raw, example) if raw.strip() else {}
