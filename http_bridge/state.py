"""Typed access to what the app factory stores on the app (no string keys scattered in handlers)."""

from __future__ import annotations

from quart import Quart

from gateway.core import Gateway

__all__ = ["GATEWAY_KEY", "gateway"]

GATEWAY_KEY = "pushgate.gateway"


def gateway(app: Quart) -> Gateway:
    return app.extensions[GATEWAY_KEY]  # type: ignore[no-any-return]
