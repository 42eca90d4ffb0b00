"""No request makes the server answer 500 (issue 4, acceptance 6): every route the bridge registers is sent
hostile input, with and without credentials, and must answer a JSON error that names the problem."""

from __future__ import annotations

import itertools

import httpx
import pytest

from gateway.admin import Admin
from gateway.core import Gateway
from http_bridge.app import create_app
from tests.conftest import Server, bearer

BODIES: list[tuple[bytes, str]] = [
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"[]", "application/json"),
    (b"null", "application/json"),
    (
        b'{"message": null, "name": 5, "platform": [], "actions": {"a": 1}, "events": "all"}',
        "application/json",
    ),
    (b'{"message_id": {"$gt": ""}, "action_id": 1e999, "limit": -1}', "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"),  # nesting deeper than json's recursion limit
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"\xff\xfe\x00garbage", "text/plain"),
    (b"message=%ff%fe&title=" + b"x" * 300, "application/x-www-form-urlencoded"),
    (b"--b\r\nContent-Disposition: form-data; name=message\r\n\r\nhi\r\n--b--\r\n", "multipart/form-data"),
    ("ünïcødé ✓ \u202e".encode(), "text/plain; charset=utf-8"),
]
PATH_VALUES = ["x", "..%2F..%2Fetc", "a" * 300, "01a20000-0000-7000-8000-000000000000", "%00", "-1"]
QUERY = "?limit=abc&cursor=%%%&since=yesterday&status=lost&topic_id=" + "z" * 100


def pushover_error(answer: dict[str, object]) -> bool:
    """Pushover's own error shape (its routes match it exactly): ``{"errors": [...], "status": 0, …}``."""
    return bool(answer.get("errors")) and answer.get("status") == 0 and "request" in answer


# Thousands of requests (every route, path value, body and credential): minutes on a busy machine.
@pytest.mark.timeout(300)
async def test_no_route_answers_500(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    owner = await admin.create_user("owner")
    await admin.create_topic("t", owner="owner", private=True)
    key = (await admin.create_key("t")).secret
    credentials = [{}, bearer("pt_000000000000_nope"), bearer(owner.secret), {"x-api-key": key}]

    probe = Gateway(server.config)  # only to read the routes the bridge registers
    try:
        rules = [r for r in create_app(probe).url_map.iter_rules() if r.endpoint != "static"]
    finally:
        await probe.engine.dispose()
    assert len(rules) > 10

    failures = []
    for rule in rules:
        for value in PATH_VALUES if rule.arguments else [""]:
            path = rule.rule
            for argument in rule.arguments:
                path = path.replace(f"<{argument}>", value)
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                for (body, content_type), headers in itertools.product(BODIES, credentials):
                    response = await http.request(
                        method, path + QUERY, content=body, headers={**headers, "Content-Type": content_type}
                    )
                    answer = response.json() if "json" in response.headers.get("content-type", "") else {}
                    if response.status_code >= 500 or (
                        response.status_code >= 400 and not (answer.get("error") or pushover_error(answer))
                    ):
                        failures.append((method, path, body[:40], response.status_code, response.text[:120]))
    assert not failures, failures[:10]
