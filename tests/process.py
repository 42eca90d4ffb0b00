"""Run the real ``pushgate`` command in a subprocess, configured only through the environment."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import TIMEOUT

_READY = re.compile(r"pushgate ready: http=http://127\.0\.0\.1:(\d+) mqtt=mqtt://127\.0\.0\.1:(\d+)")


def running(pid: int) -> bool:
    """Whether process ``pid`` still runs: an ended one not reaped yet (a zombie) does not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def helpers(pid: int) -> dict[int, str]:
    """The processes ``pid`` started that still exist, by process id, each with the module it runs (the
    gateway's helper processes: ``gateway.storage.journal``, ``gateway.channels.webpush_ecdh``)."""
    found: dict[int, str] = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        found[int(child)] = argv[argv.index(b"-m") + 1].decode() if b"-m" in argv else ""
    return found


def gateway_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
    env |= {
        "PUSHGATE_STORAGE_DATA_DIR": str(data_dir),
        "PUSHGATE_HTTP_PORT": "0",
        "PUSHGATE_MQTT_PORT": "0",
        "PUSHGATE_LOG_LEVEL": "INFO",
    }
    return env | overrides


async def pushgate(env: Mapping[str, str], *args: str) -> tuple[int, str, str]:
    """Run a CLI command to completion: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@dataclass
class GatewayProcess:
    proc: asyncio.subprocess.Process
    http_port: int
    mqtt_port: int
    log: list[str] = field(default_factory=list)
    _drain: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def _read_log(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.log.append(line.decode(errors="replace"))

    async def stop(self, sig: int) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), TIMEOUT)
        if self._drain is not None:
            await asyncio.wait_for(self._drain, TIMEOUT)
        return code


async def start_gateway(env: Mapping[str, str]) -> GatewayProcess:
    """Start ``pushgate serve`` and return once it logged its ready line with the bound ports."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        env=dict(env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        async for raw in proc.stderr:
            line = raw.decode(errors="replace")
            seen.append(line)
            match = _READY.search(line)
            if match:
                break
        else:
            raise AssertionError("pushgate serve exited before it was ready:\n" + "".join(seen))
    gw = GatewayProcess(proc, int(match.group(1)), int(match.group(2)), seen)
    gw._drain = asyncio.create_task(gw._read_log())  # keep the pipe from filling; awaited in stop()
    return gw
