"""The MicroPython example (``firmware/micropython/main.py``) run under CPython against the live gateway
(issue 7, acceptance 2).

``tests/micropython_shims`` stands in for the MicroPython-only modules: a simulated board (``machine``)
whose button the test presses and whose LED it reads, a WiFi that is the loopback, and ``umqtt.simple``
speaking real MQTT to pushgate's broker. ``config.py`` is the example's own file with the settings a user
fills in replaced, nothing else. The board's loop is driven with ``Device.run(1)`` until a condition holds.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from gateway.admin import Admin
from tests.conftest import MqttClient, Server, bearer, until

ROOT = Path(__file__).parent.parent
FIRMWARE = ROOT / "firmware" / "micropython"
SHIMS = Path(__file__).parent / "micropython_shims"
BOARD_MODULES = (
    "machine",
    "network",
    "utime",
    "ubinascii",
    "usocket",
    "umqtt",
    "umqtt.simple",
    "config",
    "main",
)


def filled_in(**values: object) -> str:
    """``firmware/micropython/config.py`` as a user fills it in: only the named settings' values change."""
    text = (FIRMWARE / "config.py").read_text()
    for name, value in values.items():
        text, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", text, flags=re.M)
        assert count == 1, f"config.py has no single {name} setting"
    return text


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[ModuleType, Any]]]:
    """Loads ``main.py`` as a board runs it, the filled-in ``config.py`` beside it and MicroPython's modules
    from the shims, and makes its ``Device``. Afterwards the device's connection is closed (a board is
    switched off) and everything imported is forgotten, so no test sees another's board."""
    devices: list[Any] = []

    def forget() -> None:
        for name in BOARD_MODULES:
            sys.modules.pop(name, None)

    def load(**values: object) -> tuple[ModuleType, Any]:
        (tmp_path / "config.py").write_text(filled_in(**values))
        forget()
        monkeypatch.syspath_prepend(str(FIRMWARE))
        monkeypatch.syspath_prepend(str(SHIMS))
        monkeypatch.syspath_prepend(str(tmp_path))  # the filled-in config.py wins over the example's
        main = importlib.import_module("main")
        assert Path(main.__file__).resolve() == (FIRMWARE / "main.py").resolve()
        devices.append(main.Device())
        return main, devices[-1]

    yield load
    for device in devices:
        if device.client is not None:
            device.client.sock.close()
    machine = sys.modules.get("machine")
    if machine is not None:
        machine.reset_board()
    forget()


async def drive(device: Any, condition: Callable[[], object], what: str) -> None:
    """Run the board's main loop one pass at a time (in a thread: its sockets block) until ``condition``."""

    async def check() -> object:
        await asyncio.to_thread(device.run, 1)
        return condition()

    await until(check, what)


async def test_button_press_reaches_the_hub_and_approve_lights_the_led(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client: Any, board: Any, capsys: Any
) -> None:
    await admin.create_topic("door", private=True)
    key = (await admin.create_key("door", label="pico")).secret
    hub: MqttClient = await make_client(username="home-hub", password=key)
    assert await hub.subscribe("pushgate/door/message") == 1

    main, device = board(
        PUSHGATE_HOST="127.0.0.1",
        PUSHGATE_MQTT_PORT=server.mqtt_port,
        PUSHGATE_TOPIC="door",
        PUSHGATE_KEY=key,
    )
    machine = sys.modules["machine"]
    button, led = main.config.BUTTON_PIN, main.config.LED_PIN
    await drive(device, lambda: device.client is not None, "the board to connect")
    assert machine.level(button) == 1 and machine.level(led) == 0  # pull-up idle, LED off

    machine.drive(button, 0)  # press
    await drive(device, lambda: not hub.messages.empty(), "the hub to receive the board's push")
    machine.drive(button, 1)  # release
    received = hub.messages.get_nowait()
    assert received.topic == "pushgate/door/message"
    envelope = json.loads(received.payload)
    assert (envelope["topic"], envelope["title"], envelope["message"], envelope["priority"]) == (
        "door",
        "Button pressed",
        "pico-door: approve?",
        "high",
    )
    assert [(a["id"], a["label"]) for a in envelope["actions"]] == [
        ("approve", "Approve"),
        ("reject", "Reject"),
    ]

    answer = await http.post(
        "/api/action", json={"message_id": envelope["id"], "action_id": "approve"}, headers=bearer(key)
    )
    assert answer.status_code == 200, answer.text
    await drive(device, lambda: machine.level(led) == 1, "the approve to light the LED")

    answer = await http.post(
        "/api/action", json={"message_id": envelope["id"], "action_id": "reject"}, headers=bearer(key)
    )
    assert answer.status_code == 200, answer.text
    await drive(device, lambda: machine.level(led) == 0, "the reject to turn the LED off")

    receipt = (await http.get(f"/api/receipts/{envelope['receipt_id']}", headers=bearer(key))).json()
    assert [t["action_id"] for t in receipt["actions_taken"]] == ["approve", "reject"]
    assert hub.messages.empty(), "the release published a second notification"
    out = capsys.readouterr().out
    assert "MQTT: connected, subscribed to pushgate/door/action and pushgate/door/error" in out
    assert "button pressed\npushed to pushgate/door/push\n" in out
    assert f"action approve on message {envelope['id']}\nLED on\n" in out
    assert f"action reject on message {envelope['id']}\nLED off\n" in out


async def test_a_refused_push_is_printed_from_the_error_topic(
    server: Server, admin: Admin, make_client: Any, board: Any, capsys: Any
) -> None:
    await admin.create_topic("door", private=True)
    key = (await admin.create_key("door")).secret
    main, device = board(
        PUSHGATE_HOST="127.0.0.1",
        PUSHGATE_MQTT_PORT=server.mqtt_port,
        PUSHGATE_TOPIC="door",
        PUSHGATE_KEY=key,
    )
    await drive(device, lambda: device.client is not None, "the board to connect")
    # A push the gateway refuses, sent over the board's connection (in a thread: it writes to a socket).
    bad = json.dumps({"message": "hi", "priority": "loud"})
    await asyncio.to_thread(device.client.publish, main.PUSH_TOPIC, bad)
    out: list[str] = []
    await drive(
        device, lambda: out.append(capsys.readouterr().out) or "refused" in "".join(out), "the refusal"
    )
    [line] = [line for line in "".join(out).splitlines() if line.startswith("pushgate refused a push: ")]
    refusal = json.loads(line.removeprefix("pushgate refused a push: "))
    assert (refusal["status"], refusal["field"]) == (400, "priority"), refusal


async def test_a_wrong_key_is_retried_with_growing_waits(
    server: Server, admin: Admin, board: Any, capsys: Any
) -> None:
    await admin.create_topic("door", private=True)
    await admin.create_key("door")
    main, device = board(
        PUSHGATE_HOST="127.0.0.1",
        PUSHGATE_MQTT_PORT=server.mqtt_port,
        PUSHGATE_TOPIC="door",
        PUSHGATE_KEY="pk_000000000000_not-a-key-of-this-gateway",
    )
    out: list[str] = []

    def two_attempts() -> bool:
        out.append(capsys.readouterr().out)
        return "".join(out).count("next attempt in") >= 2

    await drive(device, two_attempts, "two refused attempts")
    lines = "".join(out).splitlines()
    assert device.client is None
    assert [line for line in lines if line.startswith("next attempt in")] == [
        "next attempt in 1 s",
        "next attempt in 2 s",
    ]
    assert sum(line.startswith("MQTT: connecting") for line in lines) == 2, (
        "an attempt before its wait was over"
    )
    assert "MQTT: failed: MQTTException 5" in lines  # CONNACK 5: not authorised


async def test_an_approve_sent_while_the_link_was_down_arrives_after_the_reconnect(
    server: Server, admin: Admin, http: httpx.AsyncClient, board: Any, capsys: Any
) -> None:
    await admin.create_topic("door", private=True)
    key = (await admin.create_key("door")).secret
    main, device = board(
        PUSHGATE_HOST="127.0.0.1",
        PUSHGATE_MQTT_PORT=server.mqtt_port,
        PUSHGATE_TOPIC="door",
        PUSHGATE_KEY=key,
    )
    machine = sys.modules["machine"]
    await drive(device, lambda: device.client is not None, "the board to connect")
    actions = [{"id": "approve", "label": "Approve"}, {"id": "reject", "label": "Reject"}]
    pushed = await http.post(
        "/api/push/door", json={"message": "open?", "actions": actions}, headers=bearer(key)
    )

    device.client.sock.close()  # the link drops (WiFi gone): the next pass notices
    await drive(device, lambda: device.client is None, "the board to notice the lost link")
    answer = await http.post(
        "/api/action", json={"message_id": pushed.json()["id"], "action_id": "approve"}, headers=bearer(key)
    )
    assert answer.status_code == 200, answer.text
    await drive(device, lambda: machine.level(main.config.LED_PIN) == 1, "the approve after the reconnect")
    out = capsys.readouterr().out
    assert "MQTT: connection lost" in out and "next attempt in 1 s" not in out  # a lost link is not a refusal
    assert out.count("MQTT: connected, subscribed to") == 2
