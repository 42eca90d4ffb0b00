"""``GET /api/attachments/<id>``: an uploaded attachment (a Pushover message's image), byte for byte, with
the content type it was uploaded with.

Anyone with the URL may read it, as Pushover's image URLs work: the id is an unguessable UUIDv7 and the
URL reaches only the message's receivers. The answer is never run as a page of this origin (a script
uploaded as ``text/html`` cannot read the API): ``nosniff``, a sandboxing CSP, and anything but an image
is served as a download.
"""

from __future__ import annotations

from quart import Blueprint, Response, current_app, send_file

from http_bridge.state import gateway

__all__ = ["blueprint"]

blueprint = Blueprint("attachments", __name__)


@blueprint.get("/api/attachments/<attachment_id>")
async def get_attachment(attachment_id: str) -> Response:
    stored = await gateway(current_app).attachments.get(attachment_id)
    response = await send_file(
        stored.path,
        mimetype=stored.content_type,
        as_attachment=not stored.content_type.startswith("image/"),
        attachment_filename=stored.id,
        conditional=False,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, max-age=86400, immutable"
    return response
