"""``POST /api/push/<topic>``: the documented curl examples, the error table, and every body form."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from gateway.admin import Admin
from tests.conftest import TIMEOUT, Server, stored_messages


async def curl(*args: str) -> tuple[int, dict[str, str], str]:
    """Run the real curl; return (status, headers, body)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-i", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 0, err.decode()
    head, _, body = out.decode().partition("\r\n\r\n")
    status_line, *header_lines = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def assert_success(body: str, topic: str) -> dict[str, object]:
    answer = json.loads(body)
    assert set(answer) == {"success", "id", "receipt_id", "topic", "timestamp", "subscribers"}
    assert answer["success"] is True and answer["topic"] == topic
    assert isinstance(answer["subscribers"], int)
    assert str(answer["timestamp"]).endswith("Z")
    return answer


async def test_readme_quick_start_curl(server: Server, admin: Admin) -> None:
    await admin.create_topic("my-topic")
    status, _, body = await curl("-d", "Hello from my Pi!", f"{server.http_url}/api/push/my-topic")
    assert status == 200
    answer = assert_success(body, "my-topic")
    [stored] = await stored_messages(server.config)
    assert (stored.id, stored.message, stored.title, stored.priority) == (
        answer["id"],
        "Hello from my Pi!",
        "",
        "normal",
    )


async def test_header_shortcuts(server: Server, admin: Admin) -> None:
    await admin.create_topic("my-topic")
    status, _, body = await curl(
        "-H",
        "Title: Alert",
        "-H",
        "Priority: high",
        "-H",
        "Tags: warning,sensor",
        "-H",
        "Click: https://example.com/cam",
        "-d",
        "Temperature exceeded 80°C",
        f"{server.http_url}/api/push/my-topic",
    )
    assert status == 200, body
    assert_success(body, "my-topic")
    [stored] = await stored_messages(server.config)
    assert (stored.title, stored.priority, stored.tags, stored.click_url, stored.message) == (
        "Alert",
        "high",
        ["warning", "sensor"],
        "https://example.com/cam",
        "Temperature exceeded 80°C",
    )


async def test_json_body(server: Server, admin: Admin) -> None:
    await admin.create_topic("my-topic")
    status, _, body = await curl(
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"title":"Alert","message":"Temp high!","priority":"high"}',
        f"{server.http_url}/api/push/my-topic",
    )
    assert status == 200, body
    [stored] = await stored_messages(server.config)
    assert (stored.title, stored.message, stored.priority) == ("Alert", "Temp high!", "high")


async def test_private_topic_needs_its_key(server: Server, admin: Admin) -> None:
    await admin.create_topic("my-topic", private=True)
    key = await admin.create_key("my-topic")
    url = f"{server.http_url}/api/push/my-topic"

    status, _, body = await curl("-H", "Title: Alert", "-d", "Sensor triggered!", url)
    assert status == 401
    assert json.loads(body)["error"] == "Invalid API key"

    status, _, body = await curl("-H", "Authorization: Bearer pk_000000000000_wrong", "-d", "x", url)
    assert (status, json.loads(body)["error"]) == (401, "Invalid API key")

    status, _, body = await curl(
        "-H", f"Authorization: Bearer {key.secret}", "-H", "Title: Alert", "-d", "Sensor triggered!", url
    )
    assert status == 200, body
    status, _, body = await curl("-H", f"x-api-key: {key.secret}", "-d", "via x-api-key", url)
    assert status == 200, body
    assert [m.message for m in await stored_messages(server.config)] == ["Sensor triggered!", "via x-api-key"]


async def test_key_of_another_topic_is_refused(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    await admin.create_topic("a", private=True)
    await admin.create_topic("b", private=True)
    key_a = await admin.create_key("a")
    response = await http.post(
        "/api/push/b", content="x", headers={"Authorization": f"Bearer {key_a.secret}"}
    )
    assert response.status_code == 403
    assert response.json()["error"] == "Forbidden"
    assert await stored_messages(server.config) == []


async def test_get_is_405_with_allow_post(server: Server, admin: Admin) -> None:
    await admin.create_topic("my-topic")
    status, headers, body = await curl(f"{server.http_url}/api/push/my-topic")
    assert status == 405
    assert headers["allow"] == "POST"
    assert json.loads(body)["error"] == "Method Not Allowed"


async def test_unknown_topic_is_404_with_its_body(server: Server) -> None:
    status, _, body = await curl("-d", "test", f"{server.http_url}/api/push/nope")
    assert status == 404
    answer = json.loads(body)
    assert answer["error"] == 'Topic "nope" not found'
    assert "pushgate topic create nope" in answer["message"]


async def test_oversized_body_is_413(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    await admin.create_topic("my-topic")
    response = await http.post("/api/push/my-topic", content=b"a" * (server.config.http.max_body_bytes + 1))
    assert response.status_code == 413
    assert response.json()["error"] == "Payload too large"
    # within the body limit but over the message limit: also 413, naming the message
    response = await http.post(
        "/api/push/my-topic", content=b"a" * (server.config.limits.message_max_bytes + 1)
    )
    assert response.status_code == 413
    assert response.json()["error"] == "Message too large"
    assert await stored_messages(server.config) == []


async def test_malformed_json_is_400(server: Server, admin: Admin) -> None:
    await admin.create_topic("my-topic")
    status, _, body = await curl(
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"message": "unterminated',
        f"{server.http_url}/api/push/my-topic",
    )
    assert status == 400
    answer = json.loads(body)
    assert (answer["error"], answer["field"]) == ("Malformed JSON", "body")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": "x", "priority": "loud"}, "priority"),
        ({"message": "x", "title": "t" * 251}, "title"),
        ({"message": "x", "click_url": "javascript:alert(1)"}, "click_url"),
        ({"message": 5}, "message"),
        ({"message": "   "}, "message"),
        ({"message": "x", "tags": [1, 2]}, "tags"),
        ({"message": "x", "actions": [{"id": "ack", "label": "OK", "type": "shout"}]}, "actions[0].type"),
        ([1, 2], "body"),
    ],
)
async def test_invalid_fields_are_400_naming_the_field(
    server: Server, admin: Admin, http: httpx.AsyncClient, body: object, field: str
) -> None:
    await admin.create_topic("my-topic")
    response = await http.post("/api/push/my-topic", json=body)
    assert response.status_code == 400
    assert response.json()["field"] == field


async def test_no_redirect_with_or_without_trailing_slash(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    await admin.create_topic("my-topic")
    for path in ("/api/push/my-topic", "/api/push/my-topic/"):
        response = await http.post(path, content="hi", follow_redirects=False)
        assert response.status_code == 200, path


async def test_form_body_and_query_parameters(server: Server, admin: Admin, http: httpx.AsyncClient) -> None:
    await admin.create_topic("my-topic")
    response = await http.post(
        "/api/push/my-topic", data={"message": "from a form", "title": "Form", "tags": "x"}
    )
    assert response.status_code == 200
    response = await http.post(
        "/api/push/my-topic", params={"title": "Query", "priority": "5", "message": "from the query"}
    )
    assert response.status_code == 200
    response = await http.post(
        "/api/push/my-topic", files={"message": (None, "from multipart"), "priority": (None, "low")}
    )
    assert response.status_code == 200
    stored = await stored_messages(server.config)
    assert [(m.message, m.title, m.priority, m.tags) for m in stored] == [
        ("from a form", "Form", "normal", ["x"]),
        ("from the query", "Query", "urgent", []),
        ("from multipart", "", "low", []),
    ]


async def test_healthz(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_unknown_path_is_json_404(http: httpx.AsyncClient) -> None:
    response = await http.post("/nope", content="x")
    assert response.status_code == 404
    assert response.json()["error"] == "Not Found"
