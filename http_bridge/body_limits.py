"""Per-route body limits: Quart fixes a request's body limit from ``MAX_CONTENT_LENGTH`` when it creates the
request, before routing, and stops reading past it. Routes that take uploads (Pushover's attachments) get
a larger limit here, chosen by path at that moment; every other route keeps ``[http] max_body_bytes``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart.wrappers import Request

__all__ = ["request_class"]


def request_class(limits: Mapping[str, int]) -> type[Request]:
    """A request class giving the paths in ``limits`` their body limit (bytes), for form fields too."""
    table = dict(limits)

    class LimitedRequest(Request):
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
            limit = table.get(path)
            if limit is not None:
                kwargs["max_content_length"] = limit
            super().__init__(method, scheme, path, *args, **kwargs)
            if limit is not None:
                self.max_content_length = limit
                self.max_form_memory_size = limit

    return LimitedRequest
