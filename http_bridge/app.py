"""The Quart app factory: one app per ``Gateway``, so tests never share state through a module global."""

from __future__ import annotations

from quart import Quart

from gateway.core import Gateway
from http_bridge import health, push, pushover
from http_bridge.actions import blueprint as actions_blueprint
from http_bridge.attachments import blueprint as attachments_blueprint
from http_bridge.body_limits import request_class
from http_bridge.dashboard import blueprint as dashboard_blueprint
from http_bridge.devices import blueprint as devices_blueprint
from http_bridge.errors import register_error_handlers
from http_bridge.instapush import blueprint as instapush_blueprint
from http_bridge.pushstaq import blueprint as pushstaq_blueprint
from http_bridge.receipts import blueprint as receipts_blueprint
from http_bridge.state import GATEWAY_KEY
from http_bridge.topics import blueprint as topics_blueprint
from http_bridge.webhooks import blueprint as webhooks_blueprint
from http_bridge.webpush import blueprint as webpush_blueprint

__all__ = ["create_app"]


def create_app(gw: Gateway) -> Quart:
    app = Quart("pushgate")
    app.config["MAX_CONTENT_LENGTH"] = gw.config.http.max_body_bytes
    # Pushover's message endpoints take attachments: a larger body limit there only.
    app.request_class = request_class(
        {path: gw.config.pushover.max_body_bytes for path in pushover.LARGE_BODY_PATHS}
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[GATEWAY_KEY] = gw
    app.register_blueprint(push.blueprint)
    app.register_blueprint(pushstaq_blueprint)
    app.register_blueprint(instapush_blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(receipts_blueprint)
    app.register_blueprint(topics_blueprint)
    app.register_blueprint(devices_blueprint)
    app.register_blueprint(actions_blueprint)
    app.register_blueprint(webhooks_blueprint)
    app.register_blueprint(dashboard_blueprint)
    app.register_blueprint(webpush_blueprint)
    app.register_blueprint(pushover.blueprint)
    app.register_blueprint(attachments_blueprint)
    register_error_handlers(app)
    return app
