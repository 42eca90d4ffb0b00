"""One error handler for the bridge: core errors and HTTP errors become ``{"error", "message"}``; a database
that cannot take a request now is a ``503`` with ``Retry-After``; anything unexpected becomes a logged 500
that shows no internals. A ``429`` also carries ``Retry-After`` and the ``X-RateLimit-*`` headers (their
meaning: ``gateway/ratelimit.py``)."""

from __future__ import annotations

import logging

from quart import Quart, Response, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from gateway.errors import PushgateError, RateLimited, Unavailable
from gateway.ratelimit import RateState

__all__ = ["error_response", "rate_limit_headers", "register_error_handlers"]

log = logging.getLogger(__name__)

_HTTP_MESSAGES = {
    404: "No such endpoint. Push to POST /api/push/<topic>.",
    413: "The request body is larger than the configured limit ([http] max_body_bytes).",
}


def error_response(status: int, error: str, message: str, **extra: object) -> Response:
    response = jsonify({"error": error, "message": message, **extra})
    response.status_code = status
    return response


def rate_limit_headers(rate: RateState) -> dict[str, str]:
    """The ``X-RateLimit-*`` headers of every push answer, plus ``Retry-After`` when the push was refused."""
    headers = {
        "X-RateLimit-Limit": str(rate.limit),
        "X-RateLimit-Remaining": str(rate.remaining),
        "X-RateLimit-Reset": str(rate.reset),
    }
    if rate.retry_after:
        headers["Retry-After"] = str(rate.retry_after)
    return headers


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(PushgateError)
    async def _pushgate_error(exc: PushgateError) -> Response:
        response = jsonify(exc.to_dict())
        response.status_code = exc.status
        if isinstance(exc, RateLimited):
            response.headers.update(rate_limit_headers(exc.rate))
        elif isinstance(exc, Unavailable):
            response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        name = {404: "Not Found", 405: "Method Not Allowed", 413: "Payload too large"}.get(status, exc.name)
        message = _HTTP_MESSAGES.get(status, exc.description or name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            allowed = [m for m in exc.valid_methods if m not in ("HEAD", "OPTIONS")] or exc.valid_methods
            message = f"Use {' or '.join(allowed)}, not {request.method}: this endpoint accepts only that."
        response = error_response(status, name, message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(OperationalError)
    async def _database_unavailable(exc: OperationalError) -> Response:
        """The database could not be reached or written (locked past the busy timeout, disk full, server
        down): the request may be sent again, so 503 as for a refused push, not an internal error."""
        log.error("database unavailable: %s", exc.orig)
        response = error_response(
            503, "Service unavailable", "The database cannot take this request now; send it again shortly."
        )
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "Internal error", "Something went wrong on the server; it was logged.")
