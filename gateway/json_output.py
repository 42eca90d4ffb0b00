"""Compact JSON as pushgate sends it (envelopes, events, payloads): no spaces, UTF-8 kept as is.

One encoder made once: ``json.dumps`` with non-default arguments builds a new ``JSONEncoder`` on every
call, which showed in the push path's profile (an envelope per message).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["compact_json"]

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def compact_json(value: Any) -> str:
    return _encode(value)
