"""The browser side of Web Push: the page that enables notifications in a browser and its service worker.

Everything lives under ``/app/``: the page at ``/app/``, its script, style and the IndexedDB helper it
shares with the worker, and the worker itself at ``/app/sw.js``, whose default scope (``/app/``) is the
dashboard's, so no ``Service-Worker-Allowed`` header is needed. The files are plain HTML, CSS and
JavaScript under ``http_bridge/static/app/`` with no build step; they are read once at import (a few KB)
so serving them never touches the disk on the event loop.

The page runs under a strict Content-Security-Policy (scripts, styles and connections to this origin only,
no inline code, no framing); the worker's own policy lets it reach this origin only. Every file is sent
with ``Cache-Control: no-cache`` and an ETag, so a browser revalidates and picks up a new worker at once.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from quart import Blueprint, Response, request

from gateway.errors import NotFound

__all__ = ["PAGE_CSP", "SERVICE_WORKER_PATH", "SERVICE_WORKER_SCOPE", "WORKER_CSP", "blueprint"]

SERVICE_WORKER_PATH = "/app/sw.js"
SERVICE_WORKER_SCOPE = "/app/"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "worker-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
WORKER_CSP = "default-src 'none'; script-src 'self'; connect-src 'self'"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_ASSETS = ("index.html", "app.js", "app.css", "store.js", "sw.js", "icon.svg")


def _load() -> dict[str, tuple[bytes, str, str]]:
    folder = files("http_bridge") / "static" / "app"
    loaded = {}
    for name in _ASSETS:
        body = (folder / name).read_bytes()
        loaded[name] = (body, _TYPES[name[name.rindex(".") :]], hashlib.sha256(body).hexdigest()[:32])
    return loaded


_FILES = _load()

blueprint = Blueprint("dashboard", __name__)


async def _send(name: str) -> Response:
    body, content_type, etag = _FILES[name]
    response = Response(body, content_type=content_type)
    response.set_etag(etag)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if name == "index.html":
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["X-Frame-Options"] = "DENY"
    elif name == "sw.js":
        response.headers["Content-Security-Policy"] = WORKER_CSP
    return await response.make_conditional(request)


@blueprint.get("/app/")
async def page() -> Response:
    """The page; ``GET /app`` reaches it through Werkzeug's 308 to the slashed path."""
    return await _send("index.html")


@blueprint.get("/app/<name>")
async def asset(name: str) -> Response:
    if name not in _FILES or name == "index.html":
        raise NotFound(f"there is no /app/{name[:80]}; the notifications page is /app/", error="Not Found")
    return await _send(name)
