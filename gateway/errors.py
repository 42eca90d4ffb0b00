"""The exceptions of pushgate's core, one tree that every edge renders in its own shape.

    PushgateError              base; ``status`` is the HTTP status, ``error`` the short name
    ├── ConfigError            the configuration cannot be loaded
    ├── ValidationError        a request field is missing, too long or of the wrong type (400)
    ├── PayloadTooLarge        the body or the message is larger than the configured limit (413)
    ├── Unauthorized           a credential is missing, unknown or revoked (401)
    ├── Forbidden              a valid credential that does not grant this topic (403)
    ├── NotFound               the topic, key or user does not exist (404)
    ├── Conflict               the name is taken (409)
    ├── RateLimited            a push exceeds its key's or its address's rate limit (429)
    ├── Unavailable            the server cannot take the request now, e.g. the database refused a write (503)
    ├── SchemaError            the database schema is newer than this code knows
    └── ListenError            a listener cannot bind its address (in use, not permitted)

The HTTP bridge turns ``status``, ``error`` and ``message`` into ``{"error", "message"}``; the MQTT edge
publishes the same three on ``<prefix>/<topic>/error`` for a client's fault (4xx) and acknowledges the
publish, while a server's (5xx) is not acknowledged, so the device sends again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.ratelimit import RateState

__all__ = [
    "ConfigError",
    "Conflict",
    "Forbidden",
    "ListenError",
    "NotFound",
    "PayloadTooLarge",
    "PushgateError",
    "RateLimited",
    "SchemaError",
    "Unauthorized",
    "Unavailable",
    "ValidationError",
]


class PushgateError(Exception):
    """Raised for every failure a user can act on; the message says what to do."""

    status = 500
    error = "Internal error"

    def __init__(self, message: str, *, error: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error is not None:
            self.error = error

    def to_dict(self) -> dict[str, object]:
        return {"error": self.error, "message": self.message}


class ConfigError(PushgateError):
    """Raised when the configuration file or an environment override is invalid."""

    error = "Invalid configuration"


class ValidationError(PushgateError):
    """Raised when a field of a request is invalid; ``field`` names it."""

    status = 400
    error = "Invalid request"

    def __init__(self, field: str, message: str, *, error: str | None = None) -> None:
        super().__init__(message, error=error or f"Invalid field '{field}'")
        self.field = field

    def to_dict(self) -> dict[str, object]:
        return {"error": self.error, "message": self.message, "field": self.field}


class PayloadTooLarge(PushgateError):
    """Raised when a body or a field exceeds its configured size."""

    status = 413
    error = "Payload too large"


class Unauthorized(PushgateError):
    """Raised when a credential is missing where one is needed, unknown, or revoked."""

    status = 401
    error = "Invalid API key"


class Forbidden(PushgateError):
    """Raised when a valid credential does not grant access to the topic asked for."""

    status = 403
    error = "Forbidden"


class NotFound(PushgateError):
    """Raised when the named topic, key or user does not exist."""

    status = 404
    error = "Not found"


class Conflict(PushgateError):
    """Raised when a name that must be unique is taken."""

    status = 409
    error = "Conflict"


class RateLimited(PushgateError):
    """Raised when a push exceeds its credential's or its address's rate; ``rate`` says when to retry."""

    status = 429
    error = "Rate limit exceeded"

    def __init__(self, message: str, *, rate: RateState) -> None:
        super().__init__(message)
        self.rate = rate


class Unavailable(PushgateError):
    """Raised when the server cannot take the request now but will later (the database refused a write:
    another process holds its lock, the disk is full): nothing was kept, and the request may be sent again."""

    status = 503
    error = "Service unavailable"


class SchemaError(PushgateError):
    """Raised at start when the database carries a migration this code does not know (it is newer)."""

    error = "Database schema too new"


class ListenError(PushgateError):
    """Raised at start when the MQTT or HTTP listener cannot bind its configured address."""

    error = "Cannot listen"
