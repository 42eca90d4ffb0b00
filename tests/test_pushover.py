"""Pushover drop-in compatibility (issue 6): the documented examples, a real Pushover client library
(Apprise), every error row in Pushover's shape, emergency re-sending with receipts, acknowledgement,
callbacks and cancelling (time moved by a clock, not slept through), and 5 MiB attachments.

Everything runs against the real gateway (``server``): messages must reach an MQTT hub; the callback
target is a real HTTP server on 127.0.0.1 (``tests.test_webhooks.Target``).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from apprise.plugins.pushover import NotifyPushover
from sqlalchemy import func, select

from gateway.admin import Admin
from gateway.config import Config, PushoverConfig, RateLimitConfig, WebhooksConfig
from gateway.serve import Endpoints, serve
from gateway.storage import database
from gateway.storage.models import Delivery, utcnow
from tests.conftest import TIMEOUT, MqttClient, Server, bearer, stored_messages, until
from tests.test_webhooks import Target

# The compatible APIs' documentation lives in shared/, beside the checkout (as CI lays it out too).
API_DOCS = Path(__file__).resolve().parents[2] / "shared" / "api-docs"
GUIDE = API_DOCS / "pushover-guide.txt"
IOTPUSH = API_DOCS / "iotpush.txt"
MIB5 = 5_242_880
TOPIC = "my-topic"
NOT_FOUND = "receipt not found; may be invalid or expired"


class FakeClock:
    """The gateway's clock in these tests: ``advance`` moves time; sleepers wake when their time comes."""

    def __init__(self) -> None:
        self.base = utcnow()
        self.offset = 0.0
        self.sleeps = 0  # how often the scheduler went to sleep
        self._stale = False  # an advance woke a sleeper that has not gone back to sleep yet
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self.base + timedelta(seconds=self.offset)

    async def sleep(self, seconds: float) -> None:
        deadline = self.offset + seconds
        if deadline <= self.offset:
            return
        future = asyncio.get_running_loop().create_future()
        entry = (deadline, future)
        self._sleepers.append(entry)
        self.sleeps += 1
        self._stale = False
        try:
            await future
        finally:
            self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        for deadline, future in self._sleepers:
            if deadline <= self.offset and not future.done():
                future.set_result(None)
                self._stale = True

    async def idle(self, since: int | None = None) -> None:
        """Wait until the scheduler has done everything due now and sleeps again (and has slept again
        since it had gone to sleep ``since`` times: it was woken by a new emergency)."""

        async def sleeping() -> bool:
            pending = bool(self._sleepers) and all(not f.done() for _, f in self._sleepers)
            return pending and not self._stale and (since is None or self.sleeps > since)

        await until(sleeping, "the emergency scheduler to finish its round")

    def unix(self, seconds: float) -> int:
        return int((self.base + timedelta(seconds=seconds)).timestamp())


@pytest.fixture
def gateway_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config(config: Config) -> Config:
    return dataclasses.replace(
        config,
        webhooks=WebhooksConfig(allowed_hosts=("127.0.0.1",), backoff_base=0.05, backoff_max=0.4),
    )


@dataclasses.dataclass
class App:
    key: str
    owner: dict[str, str]


@pytest.fixture
async def app(server: Server, admin: Admin) -> App:
    """A topic owned by alice, and one of its API keys: Pushover's user and application token."""
    owner = await admin.create_user("alice")
    await admin.create_topic(TOPIC, owner="alice")
    key = await admin.create_key(TOPIC, label="pushover-app")
    return App(key.secret, bearer(owner.secret))


@pytest.fixture
async def hub(server: Server, app: App, make_client: Any) -> MqttClient:
    client: MqttClient = await make_client(username="hub", password=app.key)
    assert await client.subscribe(f"pushgate/{TOPIC}/message") == 1
    return client


async def envelope(hub: MqttClient) -> dict[str, Any]:
    return json.loads((await hub.receive()).payload)  # type: ignore[no-any-return]


def assert_success(body: dict[str, Any]) -> None:
    assert body["status"] == 1, body
    assert uuid.UUID(body["request"])


def assert_pushover_error(
    response: httpx.Response, status: int, field: str | None, text: str, value: str | None = None
) -> None:
    """Pushover's error shape exactly: ``{field: value, "errors": [...], "status": 0, "request": uuid}``."""
    assert response.status_code == status, response.text
    body = response.json()
    expected = {"errors", "status", "request"} | ({field} if field else set())
    assert set(body) == expected, body
    assert body["status"] == 0 and uuid.UUID(body["request"])
    if field:
        value = value or ("cannot be blank" if text.endswith("cannot be blank") else "invalid")
        assert body[field] == value, body
    assert body["errors"] == [text], body
    assert_limit_headers(response)


def assert_limit_headers(response: httpx.Response) -> None:
    for name in ("X-Limit-App-Limit", "X-Limit-App-Remaining", "X-Limit-App-Reset"):
        assert response.headers[name].isdigit(), (name, response.headers)


# -- 1. the documented examples ----------------------------------------------------------------------


async def test_the_guides_python_example_and_the_curl_example(
    server: Server, app: App, hub: MqttClient
) -> None:
    guide = GUIDE.read_text()
    # The guide's example, as printed there (one line in the text file), with only the base URL, the
    # token and the user key replaced:
    for line in (
        'url = "https://api.pushover.net/1/messages.json"',
        '"token": "YOUR_API_TOKEN"',
        '"user": "USER_KEY"',
        '"message": "Hello from Pushover!"',
        "response = requests.post(url, data=data) print(response.text)",
    ):
        assert line in guide, line
    url = server.http_url + "/1/messages.json"
    data = {"token": app.key, "user": TOPIC, "message": "Hello from Pushover!"}
    response = await asyncio.to_thread(requests.post, url, data=data, timeout=TIMEOUT)
    body = json.loads(response.text)
    assert response.status_code == 200 and set(body) == {"status", "request"}
    assert_success(body)
    assert (await envelope(hub))["message"] == "Hello from Pushover!"

    # The curl example of the Pushover-compatible endpoint (iotpush.txt), on each of the three paths.
    docs = IOTPUSH.read_text()
    assert '--form-string "message=Hello from Pushover-compatible API!"' in docs
    for path in ("/api/1/messages.json", "/1/messages.json", "/api/pushover", "/api/pushover/"):
        curl = await asyncio.create_subprocess_exec(
            "curl", "-s", "-i",
            "--form-string", f"token={app.key}",
            "--form-string", f"user={TOPIC}",
            "--form-string", "message=Hello from Pushover-compatible API!",
            server.http_url + path,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(curl.communicate(), TIMEOUT)
        head, _, payload = out.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 200"), head
        assert re.search(r"(?im)^x-limit-app-remaining: \d+\r?$", head), head
        assert_success(json.loads(payload))
        received = await envelope(hub)
        assert (received["topic"], received["message"]) == (TOPIC, "Hello from Pushover-compatible API!")

    # The guide's limits endpoint: https://api.pushover.net/1/apps/limits.json?token=YOUR_APP_TOKEN
    assert "https://api.pushover.net/1/apps/limits.json?token=YOUR_APP_TOKEN" in guide
    response = await asyncio.to_thread(
        requests.get, server.http_url + f"/1/apps/limits.json?token={app.key}", timeout=TIMEOUT
    )
    limits = response.json()
    assert set(limits) == {"limit", "remaining", "reset", "status", "request"}
    assert (limits["limit"], limits["remaining"]) == (10000, 10000 - 5)
    assert limits["reset"] > datetime.now().timestamp()
    assert response.headers["X-Limit-App-Remaining"] == "9995"
    stored = await stored_messages(server.config)
    assert [m.source for m in stored] == ["pushover"] * 5


async def test_json_query_and_all_fields(server: Server, app: App, hub: MqttClient) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http:
        response = await http.post(
            "/1/messages.json",
            json={
                "token": app.key,
                "user": TOPIC,
                "message": "Garage <b>open</b>",
                "title": "Garage",
                "url": "https://hub.lan/garage",
                "url_title": "Open the camera",
                "priority": 1,
                "sound": "siren",
                "timestamp": 1733300000,
                "html": 1,
                "device": "phone,tablet",
                "ttl": 3600,
            },
        )
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"status", "request"}
        received = await envelope(hub)
        assert (received["title"], received["message"], received["priority"], received["click_url"]) == (
            "Garage",
            "Garage <b>open</b>",
            "high",
            "https://hub.lan/garage",
        )
        assert received["actions"] == [
            {"id": "url", "label": "Open the camera", "type": "url", "url": "https://hub.lan/garage"}
        ]
        # query parameters only, as some scripts send them
        response = await http.post(f"/api/1/messages.json?token={app.key}&message=From+the+query&priority=-2")
        assert response.status_code == 200, response.text
        received = await envelope(hub)
        assert (received["message"], received["priority"]) == ("From the query", "lowest")
        # users/validate.json: the topic as the user
        response = await http.post("/1/users/validate.json", data={"token": app.key, "user": TOPIC})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["devices"], body["licenses"]) == (1, [], [])
        assert_limit_headers(response)
        response = await http.post("/1/users/validate.json", data={"token": app.key, "user": "other"})
        assert_pushover_error(response, 400, "user", "user identifier is invalid")
        response = await http.post(
            "/1/users/validate.json", data={"token": app.key, "user": TOPIC, "device": "nope"}
        )
        assert_pushover_error(response, 400, "device", "device name is not valid for user")


# -- 2. a real Pushover client library -----------------------------------------------------------------


async def test_apprise_pushover_plugin_delivers_intact(server: Server, app: App, hub: MqttClient) -> None:
    # Apprise's token and user key validation (validate_regex without a pattern) takes any non-blank
    # string, so a pushgate key and a topic name fit as they are; only the API URL is pointed here.
    notifier = NotifyPushover(
        user_key=TOPIC,
        token=app.key,
        priority="high",
        supplemental_url="https://hub.lan/door",
        supplemental_url_title="Door camera",
    )
    notifier.notify_url = server.http_url + "/1/messages.json"
    sent = await asyncio.to_thread(notifier.notify, body="Front door opened", title="Door")
    assert sent is True
    received = await envelope(hub)
    assert (received["title"], received["message"], received["priority"], received["click_url"]) == (
        "Door",
        "Front door opened",
        "high",
        "https://hub.lan/door",
    )
    assert received["actions"][0]["label"] == "Door camera"


# -- 3. errors in Pushover's shape -------------------------------------------------------------------

ERRORS: list[tuple[dict[str, Any], int, str | None, str]] = [
    ({"message": "hi"}, 400, "token", "application token is invalid"),
    ({"token": "pk_000000000000_nope", "message": "hi"}, 400, "token", "application token is invalid"),
    (
        {"token": "azGDORePK8gMaC0QOYAMyEEuzJnyUi", "message": "hi"},
        400,
        "token",
        "application token is invalid",
    ),
    ({"token": "{key}", "user": "someone-else", "message": "hi"}, 400, "user", "user identifier is invalid"),
    ({"token": "{key}", "user": TOPIC}, 400, "message", "message cannot be blank"),
    ({"token": "{key}", "message": "   "}, 400, "message", "message cannot be blank"),
    (
        {"token": "{key}", "message": "x" * 1025},
        400,
        "message",
        "message cannot be longer than 1024 characters",
    ),
    (
        {"token": "{key}", "message": "m", "title": "t" * 251},
        400,
        "title",
        "title cannot be longer than 250 characters",
    ),
    (
        {"token": "{key}", "message": "m", "url": "https://a.b/" + "u" * 501},
        400,
        "url",
        "url cannot be longer than 512 characters",
    ),
    (
        {"token": "{key}", "message": "m", "url_title": "u" * 101},
        400,
        "url_title",
        "url_title cannot be longer than 100 characters",
    ),
    (
        {"token": "{key}", "message": "m", "url": "ftp://x"},
        400,
        "url",
        "url must be an http:// or https:// URL",
    ),
    (
        {"token": "{key}", "message": "m", "priority": "3"},
        400,
        "priority",
        "priority must be -2, -1, 0, 1 or 2",
    ),
    (
        {"token": "{key}", "message": "m", "priority": "high"},
        400,
        "priority",
        "priority must be a whole number",
    ),
    (
        {"token": "{key}", "message": "m", "priority": "2", "expire": "60"},
        400,
        "retry",
        "retry is required for emergency-priority messages",
    ),
    (
        {"token": "{key}", "message": "m", "priority": "2", "retry": "29", "expire": "60"},
        400,
        "retry",
        "retry must be at least 30 seconds",
    ),
    (
        {"token": "{key}", "message": "m", "priority": "2", "retry": "30"},
        400,
        "expire",
        "expire is required for emergency-priority messages",
    ),
    (
        {"token": "{key}", "message": "m", "priority": "2", "retry": "30", "expire": "10801"},
        400,
        "expire",
        "expire must be at most 10800 seconds",
    ),
    (
        {"token": "{key}", "message": "m", "html": "1", "monospace": "1"},
        400,
        "monospace",
        "html and monospace cannot both be set",
    ),
    (
        {"token": "{key}", "message": "m", "timestamp": "soon"},
        400,
        "timestamp",
        "timestamp must be a whole number",
    ),
    (
        {"token": "{key}", "message": "m", "device": "a phone!"},
        400,
        "device",
        "device name is not valid for user",
    ),
    (
        {"token": "{key}", "message": "m", "attachment_base64": "aGk="},
        400,
        "attachment_type",
        "attachment_type is required with attachment_base64",
    ),
    (
        {"token": "{key}", "message": "m", "attachment_base64": "%%%", "attachment_type": "image/png"},
        400,
        "attachment_base64",
        "attachment_base64 is not valid base64",
    ),
]


async def test_each_error_row_answers_pushovers_shape(server: Server, app: App, admin: Admin) -> None:
    owner_token = app.owner["Authorization"].split()[1]
    rows = [
        *ERRORS,
        ({"token": owner_token, "user": TOPIC, "message": "m"}, 400, "token", "application token is invalid"),
    ]
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http:
        for fields, status, field, text in rows:
            data = {k: v.replace("{key}", app.key) for k, v in fields.items()}
            for path in ("/1/messages.json", "/api/pushover/"):
                assert_pushover_error(await http.post(path, data=data), status, field, text)
            assert_pushover_error(await http.post("/api/1/messages.json", json=data), status, field, text)
        assert await stored_messages(server.config) == []

        unknown = "u" * 30
        response = await http.get(f"/1/receipts/{unknown}.json", params={"token": app.key})
        assert_pushover_error(response, 404, "receipt", NOT_FOUND, "not found")
        response = await http.post(f"/1/receipts/{unknown}/cancel.json", data={"token": app.key})
        assert_pushover_error(response, 404, "receipt", NOT_FOUND, "not found")
        response = await http.get("/1/apps/limits.json", params={"token": "nope"})
        assert_pushover_error(response, 400, "token", "application token is invalid")
        response = await http.post(
            "/1/messages.json", content=b"{oops", headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400 and response.json()["status"] == 0
        response = await http.get("/1/messages.json")
        assert response.status_code == 405 and response.headers["Allow"] == "POST"


@pytest.mark.parametrize("which", ["quota", "rate"])
async def test_over_quota_and_over_rate_are_429_in_pushovers_shape(
    config: Config, admin: Admin, which: str
) -> None:
    """The monthly quota (limit 2) and the core's token bucket (burst 3, shared with /api/push)."""
    limited = dataclasses.replace(
        config,
        pushover=PushoverConfig(monthly_limit=2 if which == "quota" else 100),
        ratelimit=RateLimitConfig(key_burst=3, key_per_second=0.001),
    )
    await admin.create_topic(TOPIC)
    key = (await admin.create_key(TOPIC)).secret
    stop = asyncio.Event()
    ready: asyncio.Future[Endpoints] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(limited, shutdown_trigger=stop.wait, on_ready=ready.set_result))
    try:
        base = (await asyncio.wait_for(ready, TIMEOUT)).http
        async with httpx.AsyncClient(base_url=str(base), timeout=TIMEOUT) as http:
            if which == "rate":  # spend one token of the key's bucket on the iotpush-style API
                assert (
                    await http.post(f"/api/push/{TOPIC}", content="x", headers=bearer(key))
                ).status_code == 200
            for remaining in (1, 0):
                response = await http.post("/1/messages.json", data={"token": key, "message": "m"})
                assert response.status_code == 200, response.text
                if which == "quota":
                    assert response.headers["X-Limit-App-Remaining"] == str(remaining)
            response = await http.post("/1/messages.json", data={"token": key, "message": "m"})
            reset = datetime.fromtimestamp(int(response.headers["X-Limit-App-Reset"]), UTC)
            if which == "quota":
                assert (reset.day, reset.hour, reset.minute) == (1, 0, 0)
                assert_pushover_error(
                    response,
                    429,
                    None,
                    "this application has sent its 2 messages this month; the quota resets on "
                    f"{reset.strftime('%Y-%m-%d')} (UTC)",
                )
                assert response.headers["X-Limit-App-Remaining"] == "0"
                limits = (await http.get("/1/apps/limits.json", params={"token": key})).json()
                assert (limits["limit"], limits["remaining"]) == (2, 0)
            else:
                assert response.status_code == 429
                assert set(response.json()) == {"errors", "status", "request"}
                assert response.json()["errors"][0].startswith("too many pushes from this API key")
                assert int(response.headers["Retry-After"]) >= 1
                assert response.headers["X-RateLimit-Remaining"] == "0"
                assert_limit_headers(response)
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
    assert len(await stored_messages(config)) == (2 if which == "quota" else 3)


# -- 4. emergency priority ------------------------------------------------------------------------------


async def deliveries_of(config: Config, message_id: str) -> int:
    """The outbox rows that send the message itself over MQTT: the re-sends (the first send is a marked
    broadcast, which leaves no row once it went out)."""
    engine = database.create_engine(config.storage)
    try:
        async with database.session_factory(engine)() as session:
            return int(
                await session.scalar(
                    select(func.count(Delivery.id)).where(
                        Delivery.message_id == message_id, Delivery.channel == "mqtt", Delivery.event == ""
                    )
                )
                or 0
            )
    finally:
        await engine.dispose()


async def emergency(http: httpx.AsyncClient, key: str, **fields: Any) -> str:
    body = {
        "token": key,
        "user": TOPIC,
        "message": "Water leak!",
        "priority": "2",
        "retry": "30",
        "expire": "120",
    }
    response = await http.post("/1/messages.json", data={**body, **fields})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"status", "request", "receipt"} and re.fullmatch(
        r"[A-Za-z0-9]{30}", answer["receipt"]
    )
    return str(answer["receipt"])


async def test_emergency_resends_until_acknowledged_then_calls_back(
    server: Server, app: App, hub: MqttClient, gateway_clock: FakeClock
) -> None:
    clock = gateway_clock
    target = await Target().start()
    try:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http:
            receipt = await emergency(http, app.key, callback=target.url("/pushover"), tags="leak")
            first = await envelope(hub)
            assert (first["priority"], first["actions"][0]["id"], first["category"]) == (
                "urgent",
                "ack",
                "ack",
            )
            await clock.idle()

            for n in (1, 2):  # every 30 s the same message again, through the outbox
                clock.advance(30)
                again = await envelope(hub)
                assert again["id"] == first["id"] and again["message"] == "Water leak!"
                await clock.idle()
                assert await deliveries_of(server.config, first["id"]) == n

            status = (await http.get(f"/1/receipts/{receipt}.json", params={"token": app.key})).json()
            shown = ("status", "acknowledged", "acknowledged_at", "expired", "called_back", "called_back_at")
            assert [status[k] for k in shown] == [1, 0, 0, 0, 0, 0]
            assert (status["last_delivered_at"], status["expires_at"]) == (clock.unix(60), clock.unix(120))

            clock.advance(5)
            acked_at = int(time.time())  # the outbox records the callback on the wall clock
            response = await http.post(
                "/api/action", json={"message_id": first["id"], "action_id": "ack"}, headers=app.owner
            )
            assert response.status_code == 200, response.text

            call = await target.next()  # the callback, signed with alice's callback secret
            secret = (await http.get("/api/webhooks/callback-secret", headers=app.owner)).json()[
                "callback_secret"
            ]
            assert call.path == "/pushover" and call.verifies(secret)
            event = call.json()
            assert (event["event"], event["action_id"], event["message_id"]) == ("action", "ack", first["id"])
            assert event["pushover"] == {
                "receipt": receipt,
                "acknowledged": 1,
                "acknowledged_at": clock.unix(65),
                "acknowledged_by": "user:alice",
                "acknowledged_by_device": "",
            }

            async def called_back() -> Any:
                answer = (await http.get(f"/1/receipts/{receipt}.json", params={"token": app.key})).json()
                return answer if answer["called_back"] else None

            status = await until(called_back, "the receipt to show the callback")
            assert status["acknowledged"] == 1 and status["acknowledged_at"] == clock.unix(65)
            assert status["acknowledged_by"] == "user:alice" and status["expired"] == 0
            assert acked_at <= status["called_back_at"] <= time.time()

            await clock.idle()
            clock.advance(60)  # acknowledged: nothing more is sent
            await clock.idle()
            assert await deliveries_of(server.config, first["id"]) == 2
            assert hub.messages.empty()
    finally:
        await target.close()


async def test_cancel_by_receipt_and_by_tag_and_expiry_stop_resending(
    server: Server, app: App, hub: MqttClient, gateway_clock: FakeClock
) -> None:
    clock = gateway_clock
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http:
        await clock.idle()
        slept = clock.sleeps
        one = await emergency(http, app.key, message="one", tags="door")
        two = await emergency(http, app.key, message="two", tags="door,alarm")
        three = await emergency(http, app.key, message="three", tags="other")
        ids = {(await envelope(hub))["message"]: None for _ in range(3)}
        assert set(ids) == {"one", "two", "three"}
        await clock.idle(since=slept)

        response = await http.post(f"/1/receipts/{one}/cancel.json", data={"token": app.key})
        assert response.status_code == 200 and set(response.json()) == {"status", "request"}
        response = await http.post("/1/receipts/cancel_by_tag/alarm.json", data={"token": app.key})
        assert response.status_code == 200 and response.json()["canceled"] == 1

        clock.advance(30)
        assert (await envelope(hub))["message"] == "three"  # only the one not cancelled
        await clock.idle()
        assert hub.messages.empty()

        for _ in (60, 90):
            clock.advance(30)
            assert (await envelope(hub))["message"] == "three"
            await clock.idle()
        clock.advance(30)  # t = 120: "three" expired and is not sent again
        await clock.idle()
        assert hub.messages.empty()
        status = (await http.get(f"/1/receipts/{three}.json", params={"token": app.key})).json()
        assert (status["expired"], status["acknowledged"], status["last_delivered_at"]) == (
            1,
            0,
            clock.unix(90),
        )
        for receipt in (one, two):
            status = (await http.get(f"/1/receipts/{receipt}.json", params={"token": app.key})).json()
            assert status["last_delivered_at"] == clock.unix(0)


# -- 5. attachments ---------------------------------------------------------------------------------------


async def announce_body(server: Server, path: str, length: int) -> tuple[int, dict[str, Any]]:
    """Send only the head of a POST announcing ``length`` bytes; the status and JSON of the answer."""
    host, port = server.http_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        await writer.drain()
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)).decode("latin-1")
        size = int(re.search(r"(?im)^content-length: (\d+)", head)[1])  # type: ignore[index]
        body = await asyncio.wait_for(reader.readexactly(size), TIMEOUT)
    finally:
        writer.close()
    return int(head.split(" ", 2)[1]), json.loads(body)


async def test_five_mib_attachments_are_stored_and_served_one_byte_more_is_refused(
    server: Server, app: App, hub: MqttClient
) -> None:
    picture = os.urandom(MIB5)
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http:
        fields = {"token": app.key, "user": TOPIC}
        multipart = await http.post(
            "/1/messages.json",
            data={**fields, "message": "multipart"},
            files={"attachment": ("door.jpg", picture, "image/jpeg")},
        )
        assert multipart.status_code == 200, multipart.text
        encoded = await http.post(
            "/api/pushover",
            data={
                **fields,
                "message": "base64",
                "attachment_base64": base64.b64encode(picture).decode(),
                "attachment_type": "image/jpeg",
            },
        )
        assert encoded.status_code == 200, encoded.text
        for name in ("multipart", "base64"):
            received = await envelope(hub)
            assert received["message"] == name
            served = await http.get(received["image_url"])
            assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
            assert served.content == picture

        too_big = picture + b"x"
        response = await http.post(
            "/1/messages.json",
            data={**fields, "message": "multipart"},
            files={"attachment": ("door.jpg", too_big, "image/jpeg")},
        )
        text = f"attachment size is {MIB5 + 1} bytes; the limit is {MIB5} bytes"
        assert_pushover_error(response, 413, "attachment", text)
        response = await http.post(
            "/1/messages.json",
            data={
                **fields,
                "message": "base64",
                "attachment_base64": base64.b64encode(too_big).decode(),
                "attachment_type": "image/jpeg",
            },
        )
        assert_pushover_error(response, 413, "attachment", text)
        # A body over [pushover] max_body_bytes is answered from its Content-Length, before it is read.
        status, body = await announce_body(server, "/1/messages.json", 11 * 1024 * 1024)
        assert status == 413 and body["errors"] == ["the request body is larger than 10485760 bytes"]
        assert (body["attachment"], body["status"]) == ("invalid", 0)
        # other routes keep the 64 KiB limit
        response = await http.post(f"/api/push/{TOPIC}", content=b"x" * 70_000, headers=bearer(app.key))
        assert response.status_code == 413
        response = await http.get("/api/attachments/01a20000-0000-7000-8000-000000000000")
        assert response.status_code == 404
    assert len(await stored_messages(server.config)) == 2
    stored = sorted(p.name for p in (Path(server.config.storage.data_dir) / "attachments").iterdir())
    assert len(stored) == 2
