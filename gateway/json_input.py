"""Client JSON in, for every edge: bytes to a JSON object, or a ``ValidationError`` naming ``body``.

``json.loads`` raises ``RecursionError`` for deeply nested input (a few kilobytes of ``[``), which would
otherwise surface as a server error; here it is the client's malformed body like any other.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import ValidationError

__all__ = ["parse_json_object"]


def parse_json_object(raw: bytes | str, example: str) -> dict[str, Any]:
    """``raw`` as a JSON object; ``example`` shows the caller what an object for this endpoint looks like."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError("body", f"the body is not valid JSON: {exc}", error="Malformed JSON") from exc
    except RecursionError as exc:
        raise ValidationError("body", "the JSON body is nested too deeply", error="Malformed JSON") from exc
    if not isinstance(body, dict):
        raise ValidationError("body", f"the JSON body must be an object, e.g. {example}")
    return body
