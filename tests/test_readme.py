"""The README's quick-start commands work as written: extracted from the README and run with bash.

Only the ports change (the test server listens on ephemeral ones) and ``pushgate`` is pointed at
the test's data dir through the environment; every other character is the README's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

from tests.conftest import TIMEOUT
from tests.process import gateway_env, start_gateway

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> list[str]:
    """The lines of the ``sh`` blocks under a '## title' heading."""
    body = README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [line for block in re.findall(r"```sh\n(.*?)```", body, re.S) for line in block.splitlines()]


def localise(line: str, http_port: int, mqtt_port: int) -> str:
    line = line.replace("127.0.0.1:8080", f"127.0.0.1:{http_port}")
    return line.replace("-h 127.0.0.1 ", f"-h 127.0.0.1 -p {mqtt_port} ")


async def bash(script: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT * 2)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_readme_gives_the_two_commands_first() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    assert first_block.group(1).startswith("make run") and "make test" in first_block.group(1)


async def test_http_and_mqtt_quick_starts_work_as_written(tmp_path: Path) -> None:
    env = gateway_env(tmp_path / "data")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    gateway = await start_gateway(env)
    try:
        http_lines = [localise(x, gateway.http_port, gateway.mqtt_port) for x in section("HTTP quick start")]
        code, out, err = await bash("\n".join(http_lines), env)
        assert code == 0, err
        answers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert len(answers) == 4 and all(a["success"] for a in answers), out
        assert [a["topic"] for a in answers] == ["my-topic", "my-topic", "my-topic", "alarm"]

        mqtt_lines = [localise(x, gateway.http_port, gateway.mqtt_port) for x in section("MQTT quick start")]
        # The README backgrounds mosquitto_sub; here it stops after the messages so the test ends. The three
        # HTTP pushes to my-topic waited for a subscriber, so the hub gets them too (README says so).
        mqtt_lines = [x.replace(" -v &", " -v -C 4 -W 10 &") for x in mqtt_lines] + ["wait"]
        code, out, err = await bash("\n".join(mqtt_lines), env)
        assert code == 0, err
        received = [line.partition(" ") for line in out.strip().splitlines()]
        assert {topic for topic, _, _ in received} == {"pushgate/my-topic/message"}
        messages = [json.loads(payload)["message"] for _, _, payload in received]
        assert sorted(messages) == [
            "Hello from my Pi!",
            "Sensor triggered!",
            "Temp high!",
            "Temperature exceeded 80°C",
        ]
    finally:
        await gateway.stop(signal.SIGTERM)
