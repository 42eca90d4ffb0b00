"""API keys and user tokens: generated with ``secrets``, stored as SHA-256, compared in constant time.

A credential is ``<kind>_<lookup>_<secret>``. The lookup part is stored in clear and indexed, so the row is
found without scanning; the whole credential is compared to the stored hash with ``hmac.compare_digest``.
The credentials are 190+ bits of randomness, so a fast hash is the right tool (no password stretching).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = [
    "KEY_PREFIX",
    "TOKEN_PREFIX",
    "Credential",
    "generate",
    "hash_secret",
    "is_key",
    "parse",
    "verify",
]

KEY_PREFIX = "pk"
TOKEN_PREFIX = "pt"
_LOOKUP_BYTES = 6
_SECRET_BYTES = 24


@dataclass(frozen=True, slots=True)
class Credential:
    kind: str  # KEY_PREFIX or TOKEN_PREFIX
    lookup: str
    value: str


def generate(kind: str) -> Credential:
    lookup = secrets.token_hex(_LOOKUP_BYTES)
    value = f"{kind}_{lookup}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    return Credential(kind, lookup, value)


def parse(value: str) -> Credential | None:
    """Split a presented credential; ``None`` when it cannot be one of ours (so no database look-up)."""
    parts = value.split("_", 2)
    if len(parts) != 3 or parts[0] not in (KEY_PREFIX, TOKEN_PREFIX) or len(parts[1]) != 2 * _LOOKUP_BYTES:
        return None
    return Credential(parts[0], parts[1], value)


def is_key(value: str) -> bool:
    """Whether ``value`` has an API key's shape (``pk_<12 chars>_…``), valid or not.

    No topic name may have this shape (``gateway.topics``), so ``/api/push/<segment>/`` tells a key from a
    topic by the segment alone, and an invalid key there is a 401, never a 404 for an unknown topic.
    """
    cred = parse(value)
    return cred is not None and cred.kind == KEY_PREFIX


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def verify(value: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(value), stored_hash)
