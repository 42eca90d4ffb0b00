"""The README's MQTT quick start with Debian's mosquitto_pub and mosquitto_sub, as a person would type it."""

from __future__ import annotations

import asyncio
import json

from gateway.admin import Admin
from tests.conftest import TIMEOUT, Server, stored_messages


async def run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT + 5)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_mosquitto_pub_and_sub(server: Server, admin: Admin) -> None:
    await admin.create_topic("my-topic")
    key = (await admin.create_key("my-topic", label="esp32")).secret
    port = str(server.mqtt_port)

    # A message pushed before the hub subscribes waits for it, so the order of the two commands is free.
    sub = asyncio.create_task(
        run(
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-t",
            "pushgate/my-topic/message",
            "-u",
            "hub",
            "-P",
            key,
            "-v",
            "-C",
            "2",
            "-W",
            str(int(TIMEOUT)),
        )
    )
    for qos in ("0", "1"):
        code, _, err = await run(
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-t",
            "pushgate/my-topic/push",
            "-u",
            "esp32",
            "-P",
            key,
            "-q",
            qos,
            "-m",
            "Sensor triggered!",
        )
        assert code == 0, err
    code, out, err = await sub
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:
        topic, _, payload = line.partition(" ")
        assert topic == "pushgate/my-topic/message"
        assert json.loads(payload)["message"] == "Sensor triggered!"
    assert [m.message for m in await stored_messages(server.config)] == ["Sensor triggered!"] * 2


async def test_mosquitto_pub_with_a_wrong_key_is_refused(server: Server, admin: Admin) -> None:
    await admin.create_topic("my-topic")
    code, _, err = await run(
        "mosquitto_pub",
        "-h",
        "127.0.0.1",
        "-p",
        str(server.mqtt_port),
        "-t",
        "pushgate/my-topic/push",
        "-u",
        "esp32",
        "-P",
        "pk_000000000000_wrong",
        "-m",
        "x",
    )
    assert code != 0
    assert "not authori" in err.lower()
