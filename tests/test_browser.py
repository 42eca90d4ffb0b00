"""The browser side of Web Push (issue 5, acceptance 5): the page and service worker under ``/app/``, run in
Debian's headless Chromium driven by Playwright.

The worker gets a real push through Chrome DevTools' ``ServiceWorker.deliverPushMessage`` (its real
``push`` handler runs and shows the notification). Chromium has no DevTools route to click a
notification, so the click is a ``NotificationEvent`` built from the real notification and dispatched in
the worker; the worker's handler then reports to the real gateway, and the receipt read back over HTTP
shows the action. The browser's own subscription needs its push service (Google's, for Chromium), which a
test on loopback cannot reach: the page's "Enable" and "Sign out" steps run with ``PushManager`` stood in
for in the page (the rest of the page, the gateway's key and ``/api/devices`` as they are); other tests
register this browser's device over the API and store its id where the "Enable" step would.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Worker, async_playwright

from gateway.admin import Admin
from http_bridge.dashboard import PAGE_CSP, WORKER_CSP
from tests.conftest import TIMEOUT, Server, bearer, until
from tests.test_devices import subscription

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEPLOY = {
    "title": "Deployment Request",
    "message": "Release v2.1.0 to production — requested by @alice",
    "priority": "urgent",
    "tags": ["deploy"],
    "click_url": "https://ci.example.com/releases/2.1.0",
    "actions": [
        {"id": "approve", "label": "Approve", "type": "button"},
        {"id": "reject", "label": "Reject", "type": "button", "destructive": True},
    ],
}
# A Web Push endpoint nothing listens on: the device exists, nothing is ever delivered to it.
ENDPOINT = "https://127.0.0.1:9/push/browser-test"
ALERT = {
    "title": "Server Alert",
    "message": "CPU usage at 95% on prod-01",
    "priority": "high",
    "actions": [
        {"id": "ack", "label": "Acknowledge", "type": "button"},
        {"id": "reply", "label": "Reply", "type": "reply"},
    ],
}


def web_push_payload(sent: dict[str, Any], answer: dict[str, Any], topic: str) -> str:
    """The JSON the Web Push channel encrypts for a browser: the push answer's ids and the message sent."""
    return json.dumps(
        {
            "id": answer["id"],
            "receipt_id": answer["receipt_id"],
            "topic": topic,
            "title": sent["title"],
            "message": sent["message"],
            "priority": sent["priority"],
            "tags": sent.get("tags", []),
            "click_url": sent.get("click_url"),
            "icon": None,
            "actions": sent["actions"],
        }
    )


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=3 * TIMEOUT * 1000
        )
        try:
            yield launched
        finally:
            await launched.close()


class SignedInBrowser:
    """A browser context whose user signed in on the page, with the registered worker and a DevTools
    session to push through."""

    def __init__(self, context: BrowserContext, page: Page, worker: Worker, origin: str) -> None:
        self.context = context
        self.page = page
        self.worker = worker
        self.origin = origin
        self._registrations: dict[str, str] = {}  # scope URL -> registration id
        self._activated: set[str] = set()  # registration ids whose worker is activated

    async def remember_device(self, device_id: str) -> None:
        """Store this browser's device id as the page's "Enable" step does after ``POST /api/devices``
        (that step needs a real push service; see the module docstring)."""
        await self.page.evaluate(
            """async (id) => pushgateStore.saveCredentials(
                {...(await pushgateStore.credentials()), device_id: id})""",
            device_id,
        )

    async def start_devtools(self) -> None:
        self.cdp = await self.context.new_cdp_session(self.page)
        self.cdp.on("ServiceWorker.workerRegistrationUpdated", self._registrations_updated)
        self.cdp.on("ServiceWorker.workerVersionUpdated", self._versions_updated)
        await self.cdp.send("ServiceWorker.enable")

    def _registrations_updated(self, event: dict[str, Any]) -> None:
        for registration in event["registrations"]:
            if not registration["isDeleted"]:
                self._registrations[registration["scopeURL"]] = registration["registrationId"]

    def _versions_updated(self, event: dict[str, Any]) -> None:
        for version in event["versions"]:
            if version["status"] == "activated":
                self._activated.add(version["registrationId"])

    async def push(self, scope: str, payload: str) -> None:
        """Deliver a push message with ``payload`` to the worker registered at ``scope``, once that worker
        is activated: a push goes to a registration's active worker (the Push API), and the
        ``serviceworker`` event that ``sign_in`` waits for comes while the worker installs."""

        async def activated() -> str | None:
            registration_id = self._registrations.get(scope)
            return registration_id if registration_id in self._activated else None

        registration_id = await until(activated, f"the activated worker registered at {scope}")
        await self.cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": self.origin, "registrationId": registration_id, "data": payload},
        )

    async def notifications(self, tag: str) -> list[dict[str, Any]]:
        """What the worker's registration shows for ``tag``, as the Notification objects say it."""
        return await self.worker.evaluate(  # type: ignore[no-any-return]
            """async (tag) => (await self.registration.getNotifications({tag})).map((n) => ({
                title: n.title, body: n.body, tag: n.tag, data: n.data, actions: n.actions,
                requireInteraction: n.requireInteraction,
            }))""",
            tag,
        )

    async def click(self, tag: str, action: str = "", reply: str | None = None) -> None:
        """A click on the notification ``tag`` (on the button ``action``, or the body when empty)."""
        await self.worker.evaluate(
            """async ([tag, action, reply]) => {
                const [notification] = await self.registration.getNotifications({tag});
                self.dispatchEvent(new NotificationEvent('notificationclick', {notification, action, reply}));
            }""",
            [tag, action, reply],
        )


async def sign_in(browser: Browser, server: Server, token: str) -> SignedInBrowser:
    """Open the page, grant notifications, sign in with ``token`` the way a user does. The page runs under
    its Content-Security-Policy: anything it blocks would show as a console error, and there must be none."""
    origin = server.http_url.rstrip("/")
    context = await browser.new_context()
    await context.grant_permissions(["notifications"], origin=origin)
    page = await context.new_page()
    errors: list[str] = []
    page.on(
        "console",
        lambda message: (
            errors.append(f"{message.text} {message.location}") if message.type == "error" else None
        ),
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{origin}/app/")
    await page.wait_for_selector("body[data-ready=true]")

    await page.fill("#token", "pt_000000000000_not-a-token")
    await page.click("#signin-button")
    await page.wait_for_selector("#status.error:has-text('Could not sign in')")
    assert await page.evaluate("pushgateStore.credentials()") is None
    errors = [e for e in errors if "401" not in e]  # the browser logs the refused GET /api/devices

    await page.fill("#token", token)
    await page.fill("#device-name", "Chromium in CI")
    async with context.expect_event("serviceworker", timeout=TIMEOUT * 1000) as appeared:
        await page.click("#signin-button")
        await page.wait_for_selector("#status:has-text('Signed in')")
    worker = await appeared.value
    assert worker.url == f"{origin}/app/sw.js"
    assert await page.is_hidden("#signin") and await page.is_visible("#enable-button")
    stored = await page.evaluate("pushgateStore.credentials()")
    assert stored == {"token": token, "device_id": None, "device_name": "Chromium in CI"}
    assert errors == []
    signed_in = SignedInBrowser(context, page, worker, origin)
    await signed_in.start_devtools()
    return signed_in


async def test_worker_and_page_are_served_with_their_types_and_policies(http: httpx.AsyncClient) -> None:
    worker = await http.get("/app/sw.js")
    assert worker.status_code == 200
    assert worker.headers["content-type"] == "text/javascript; charset=utf-8"
    assert worker.headers["content-security-policy"] == WORKER_CSP
    assert "Service-Worker-Allowed" not in worker.headers  # its default scope, /app/, is the dashboard's
    assert "self.addEventListener('push'" in worker.text

    page = await http.get("/app/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert "script-src 'self';" in PAGE_CSP and "unsafe" not in PAGE_CSP
    assert "<script>" not in page.text and not re.search(r"\son\w+\s*=", page.text)  # no inline code

    again = await http.get("/app/sw.js", headers={"If-None-Match": worker.headers["etag"]})
    assert again.status_code == 304 and worker.headers["cache-control"] == "no-cache"
    assert (await http.get("/app")).headers["location"].endswith("/app/")
    for name in ("store.js", "app.js"):
        assert (await http.get(f"/app/{name}")).headers["content-type"] == "text/javascript; charset=utf-8"
    missing = await http.get("/app/..%2Fdashboard.py")
    assert missing.status_code == 404 and missing.json()["error"] == "Not Found"


async def test_push_in_chromium_shows_buttons_and_a_tap_reaches_the_receipt(
    server: Server, admin: Admin, http: httpx.AsyncClient, browser: Browser
) -> None:
    token = (await admin.create_user("alice")).secret
    await admin.create_topic("deploys", owner="alice", private=True)
    key = (await admin.create_key("deploys", label="ci")).secret
    deploy = (await http.post("/api/push/deploys", json=DEPLOY, headers=bearer(key))).json()

    user = await sign_in(browser, server, token)
    device = await http.post(
        "/api/devices",
        json={"platform": "web", "subscription": subscription(ENDPOINT), "device_name": "Chromium in CI"},
        headers=bearer(token),
    )
    await user.remember_device(device.json()["id"])
    scope = await user.page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
    assert scope == f"{user.origin}/app/"  # the worker's scope covers the dashboard page it was loaded from

    await user.push(scope, web_push_payload(DEPLOY, deploy, "deploys"))

    async def shown() -> list[dict[str, Any]]:
        return await user.notifications(deploy["id"])

    [notification] = await until(shown, "the notification of the push")
    assert notification["title"] == "Deployment Request"
    assert notification["body"] == DEPLOY["message"]
    assert notification["requireInteraction"] is True  # urgent
    assert [(a["action"], a["title"]) for a in notification["actions"]] == [
        ("approve", "Approve"),
        ("reject", "Reject"),
    ]
    assert notification["data"]["receipt_id"] == deploy["receipt_id"]

    await user.click(deploy["id"], "approve")

    async def acted() -> dict[str, Any] | None:
        receipt = (await http.get(f"/api/receipts/{deploy['receipt_id']}", headers=bearer(key))).json()
        return receipt if receipt["status"] == "acted" else None

    receipt = await until(acted, "the tap on Approve recorded on the receipt")
    [taken] = receipt["actions_taken"]
    assert (taken["action_id"], taken["action_label"], taken["reply_text"]) == ("approve", "Approve", None)
    assert taken["device_name"] == "Chromium in CI"  # the worker named this browser's device
    assert receipt["acted_count"] == 1
    assert await user.notifications(deploy["id"]) == []  # the click closed it


async def test_inline_reply_and_a_click_on_the_body(
    server: Server, admin: Admin, http: httpx.AsyncClient, browser: Browser
) -> None:
    token = (await admin.create_user("bob")).secret
    await admin.create_topic("ops", owner="bob", private=True)
    alert = (await http.post("/api/push/ops", json=ALERT, headers=bearer(token))).json()
    second = {**ALERT, "title": "Disk almost full", "message": "92% on /var"}
    disk = (await http.post("/api/push/ops", json=second, headers=bearer(token))).json()

    user = await sign_in(browser, server, token)
    # this browser's device was deleted since: the worker's reports must still count, unnamed
    await user.remember_device("01a20000-0000-7000-8000-000000000000")
    scope = f"{user.origin}/app/"
    await user.push(scope, web_push_payload(ALERT, alert, "ops"))
    await user.push(scope, web_push_payload(second, disk, "ops"))

    async def both_shown() -> bool:
        return bool(await user.notifications(alert["id"])) and bool(await user.notifications(disk["id"]))

    await until(both_shown, "both notifications")
    [shown] = await user.notifications(alert["id"])
    reply_button = shown["actions"][1]
    assert (reply_button["action"], reply_button["type"], reply_button["placeholder"]) == (
        "reply",
        "text",
        "Reply",
    )
    assert shown["requireInteraction"] is False

    await user.click(alert["id"], "reply", reply="on it, restarting workers")
    await user.click(disk["id"])  # the body: opens the dashboard and marks the message read

    async def receipt(answer: dict[str, Any], status: str) -> dict[str, Any] | None:
        found = (await http.get(f"/api/receipts/{answer['receipt_id']}", headers=bearer(token))).json()
        return found if found["status"] == status else None

    replied = await until(lambda: receipt(alert, "acted"), "the inline reply on the receipt")
    assert [(t["action_id"], t["reply_text"], t["device_name"]) for t in replied["actions_taken"]] == [
        ("reply", "on it, restarting workers", None)
    ]
    read = await until(lambda: receipt(disk, "read"), "the body click marking the message read")
    assert read["read_count"] == 1 and read["actions_taken"] == []


# The browser's push service, stood in for in the page: Chromium's PushManager registers with Google's push
# service, which a loopback test cannot reach. Everything else on the page runs as it is: the VAPID key is
# fetched from the gateway, the subscription it would get is registered through POST /api/devices, and the
# device id is kept for the worker.
PUSH_SERVICE_STAND_IN = """([endpoint, keys]) => {
    let current = null;
    PushManager.prototype.getSubscription = async function () { return current; };
    PushManager.prototype.subscribe = async function (options) {
        self.subscribedWith = {
            userVisibleOnly: options.userVisibleOnly,
            key: Array.from(new Uint8Array(options.applicationServerKey)),
        };
        current = {
            endpoint,
            options,
            toJSON: () => ({endpoint, expirationTime: null, keys}),
            unsubscribe: async () => { self.unsubscribed = true; current = null; return true; },
        };
        return current;
    };
}"""


async def test_enable_registers_this_browser_and_sign_out_removes_it(
    server: Server, admin: Admin, http: httpx.AsyncClient, browser: Browser
) -> None:
    token = (await admin.create_user("carol")).secret
    user = await sign_in(browser, server, token)
    browser_subscription = subscription("https://push.example.net/wpush/v2/chromium-in-ci")
    await user.page.evaluate(
        PUSH_SERVICE_STAND_IN, [browser_subscription["endpoint"], browser_subscription["keys"]]
    )

    await user.page.click("#enable-button")
    await user.page.wait_for_selector("#status:has-text('Notifications are on for this browser')")

    vapid = (await http.get("/api/webpush/vapid-public-key")).json()["public_key"]
    used = await user.page.evaluate("self.subscribedWith")
    assert used["userVisibleOnly"] is True
    assert bytes(used["key"]) == base64.urlsafe_b64decode(vapid + "=" * (-len(vapid) % 4))
    [device] = (await http.get("/api/devices", headers=bearer(token))).json()["devices"]
    assert (device["platform"], device["device_name"], device["status"]) == (
        "web",
        "Chromium in CI",
        "active",
    )
    assert device["token_hint"] == "https://push.example.net/...n-ci"
    stored = await user.page.evaluate("pushgateStore.credentials()")
    assert stored == {"token": token, "device_id": device["id"], "device_name": "Chromium in CI"}

    await user.page.click("#signout-button")
    await user.page.wait_for_selector("#status:has-text('Signed out; this browser gets no more')")
    assert await user.page.evaluate("self.unsubscribed") is True
    assert (await http.get("/api/devices", headers=bearer(token))).json()["devices"] == []
    assert await user.page.evaluate("pushgateStore.credentials()") is None
    assert await user.page.is_visible("#signin-button")
