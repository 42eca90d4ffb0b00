"""Shared benchmark harness: server subprocesses, readiness, cleanup and latency statistics.

Each server runs in its own subprocess so the load generator (paho threads, httpx) never shares the
server's CPU time or event loop with the thing it measures. Readiness comes from the line each server
prints once its sockets are bound, never from a fixed sleep.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BENCH_DIR",
    "add_server_arguments",
    "parse_server_arguments",
    "warn_if_busy",
    "OTHER_CPU_WARNING",
    "code_version",
    "cpu_seconds",
    "family_cpu_seconds",
    "LatencyStats",
    "machine_busy_seconds",
    "percentile",
    "pushgate_env",
    "run_amqtt",
    "run_mosquitto",
    "run_pushgate",
    "Server",
    "summarize",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
PUSHGATE = str(VENV_BIN / "pushgate")
PACKAGES = ("gateway", "broker", "http_bridge")  # what ``pushgate serve`` runs
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
OTHER_CPU_WARNING = 0.2  # share of one core other processes may use during a run before figures are flagged
READY_TIMEOUT = 30.0  # seconds a server may take to bind its sockets
STOP_TIMEOUT = 15.0  # seconds a server may take to shut down gracefully before it is killed

_PUSHGATE_READY = re.compile(r"pushgate ready: http=(?P<http>\S+) mqtt=(?P<mqtt>\S+)")
_AMQTT_READY = re.compile(r"amqtt ready: mqtt=(?P<mqtt>\S+)")
_MOSQUITTO_READY = re.compile(r"mosquitto version \S+ running")
_MQTT_URL = re.compile(r"mqtt://(?P<host>[^:/\s]+):(?P<port>\d+)")


@dataclass
class Server:
    """A server subprocess, its endpoints as announced on its ready line, and its recent output."""

    name: str
    proc: subprocess.Popen[str]
    endpoints: dict[str, str] = field(default_factory=dict)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    lines: int = 0  # output lines read
    ready_line: str | None = None

    @property
    def http_url(self) -> str:
        return self.endpoints["http"]

    @property
    def mqtt_addr(self) -> tuple[str, int]:
        match = _MQTT_URL.fullmatch(self.endpoints["mqtt"])
        if match is None:
            raise RuntimeError(f"{self.name}: unexpected MQTT endpoint {self.endpoints['mqtt']!r}")
        return match["host"], int(match["port"])

    def output(self) -> str:
        return "\n".join(self.tail)


def code_version(code_dir: Path | None = None) -> str:
    """Which pushgate code a run measured: git HEAD (for the repository itself) and a hash of the served
    packages' sources, which tells working-tree states apart when figures are recorded between commits."""
    root = code_dir or REPO_DIR
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    sources = f"sources sha256 {digest.hexdigest()[:12]}"
    if code_dir is not None:
        return f"{code_dir} (--code), {sources}"
    try:
        git = ["git", "-C", str(REPO_DIR)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", *PACKAGES],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"working tree, {sources}"
    return f"git {head}{' + uncommitted changes' if dirty else ''}, {sources}"


def pushgate_env(
    data_dir: str,
    *,
    log_level: str = "INFO",
    synchronous: str | None = None,
    code_dir: Path | None = None,
    rate_limits: bool = False,
) -> dict[str, str]:
    """Environment for the pushgate CLI: ephemeral ports on 127.0.0.1, the database in ``data_dir``; the
    caller's own ``PUSHGATE_*`` variables are dropped so a local configuration cannot change the run.

    INFO is needed for the ready line (accepted pushes are logged at DEBUG, so a default deployment
    writes no line per push either). ``code_dir`` (e.g. ``git archive`` of a commit) goes
    first on PYTHONPATH, ahead of the editable install's finder, to measure that code instead.

    Push rate limits are off unless ``rate_limits``: every load here comes from one address, which the
    default limits (a burst of 1200, then 10/s) would refuse within one run, so the figures would show the
    policy, not the capacity. Code without ``[ratelimit]`` ignores the variable.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
    env.update(
        PUSHGATE_STORAGE_DATA_DIR=data_dir,
        PUSHGATE_HTTP_HOST="127.0.0.1",
        PUSHGATE_HTTP_PORT="0",
        PUSHGATE_MQTT_HOST="127.0.0.1",
        PUSHGATE_MQTT_PORT="0",
        PUSHGATE_LOG_LEVEL=log_level,
    )
    if synchronous:
        env["PUSHGATE_STORAGE_SQLITE_SYNCHRONOUS"] = synchronous
    if not rate_limits:
        env["PUSHGATE_RATELIMIT_ENABLED"] = "false"
    if code_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code_dir), env.get("PYTHONPATH")]))
    return env


def _drain(server: Server, pattern: re.Pattern[str], ready: threading.Event) -> None:
    """Read the server's output until EOF so the pipe never fills; set ``ready`` on the ready line."""
    assert server.proc.stdout is not None
    for line in server.proc.stdout:
        server.lines += 1
        server.tail.append(line.rstrip("\n"))
        if not ready.is_set():
            match = pattern.search(line)
            if match is not None:
                server.endpoints.update(match.groupdict())
                server.ready_line = line.strip()
                ready.set()
    ready.set()  # EOF: wake the waiter, which sees the process has exited


@contextlib.contextmanager
def _server(
    name: str,
    argv: Sequence[str],
    env: dict[str, str],
    pattern: re.Pattern[str],
    endpoints: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Start ``argv``, wait for its ready line, yield it, and always stop it (SIGTERM, then SIGKILL).

    Endpoints come from the ready line's named groups, or from ``endpoints`` when the port was chosen here.
    """
    proc = subprocess.Popen(
        list(argv),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    server = Server(name, proc, endpoints=dict(endpoints or {}))
    ready = threading.Event()
    drain = threading.Thread(target=_drain, args=(server, pattern, ready), name=f"{name}-drain", daemon=True)
    drain.start()
    try:
        if not ready.wait(READY_TIMEOUT) or server.ready_line is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT if ready.is_set() else 0)  # output ended: let it finish exiting
            raise RuntimeError(f"{name} did not become ready (exit code {proc.poll()}):\n{server.output()}")
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        drain.join(STOP_TIMEOUT)


@contextlib.contextmanager
def run_pushgate(
    *,
    topic: str = "bench",
    synchronous: str | None = None,
    data_dir: str | None = None,
    code_dir: Path | None = None,
    rate_limits: bool = False,
) -> Iterator[Server]:
    """A fresh ``pushgate serve`` on a temporary SQLite database with the public ``topic`` created."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pushgate-bench-"))
        env = pushgate_env(data_dir, synchronous=synchronous, code_dir=code_dir, rate_limits=rate_limits)
        created = subprocess.run(
            [PUSHGATE, "topic", "create", topic],
            env=env,
            capture_output=True,
            text=True,
            timeout=READY_TIMEOUT,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"pushgate topic create {topic} failed:\n{created.stdout}{created.stderr}")
        yield stack.enter_context(_server("pushgate", [PUSHGATE, "serve"], env, _PUSHGATE_READY))


@contextlib.contextmanager
def run_amqtt() -> Iterator[Server]:
    """A stock amqtt broker (``bench/amqtt_server.py``) on an ephemeral 127.0.0.1 port, anonymous allowed."""
    argv = [sys.executable, str(BENCH_DIR / "amqtt_server.py")]
    with _server("amqtt", argv, dict(os.environ), _AMQTT_READY) as server:
        yield server


def _free_port() -> int:
    """An unused 127.0.0.1 port, for servers that cannot bind port 0 themselves (mosquitto 2.0 treats
    ``listener 0`` as a Unix socket). Another process could take it first; the ready wait then fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def run_mosquitto() -> Iterator[Server]:
    """Debian's mosquitto (C, single thread) as a reference: how fast this harness can drive a broker."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="mosquitto-bench-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
            # Nagle off as on every Python server here (asyncio sets TCP_NODELAY; mosquitto's default is
            # on, which adds delayed-ACK stalls); a queue deep enough for the harness's window
            "set_tcp_nodelay true\nmax_queued_messages 10000\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        argv = [MOSQUITTO, "-c", str(conf)]
        endpoints = {"mqtt": f"mqtt://127.0.0.1:{port}"}
        with _server("mosquitto", argv, dict(os.environ), _MOSQUITTO_READY, endpoints) as server:
            yield server


def cpu_seconds(pid: int | None = None) -> float:
    """User+system CPU time of a process (default: this one), to show which side of a run is saturated."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def family_cpu_seconds(pid: int) -> float:
    """``cpu_seconds`` of a process and of the children it has now (pushgate's storage journal and Web Push
    key agreement helper), so that work handed to a helper process is counted as the server's."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = cpu_seconds(pid)
    for child in children:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(int(child))
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine spent busy (``/proc/stat``). Minus the server's and the
    harness's own share, it shows whether something else (a test run, a build) competed for the cores."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (``p`` in 0..100) of already sorted values; NaN when empty."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * p / 100.0
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Latency summary in milliseconds."""

    count: int
    p50: float
    p99: float
    max: float
    mean: float


def summarize(latencies_ns: Sequence[int]) -> LatencyStats:
    """p50/p99/max/mean in milliseconds from nanosecond samples."""
    values = sorted(v / 1e6 for v in latencies_ns)
    mean = sum(values) / len(values) if values else float("nan")
    return LatencyStats(
        len(values), percentile(values, 50), percentile(values, 99), max(values, default=mean), mean
    )


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both benchmarks take about the pushgate server they start."""
    parser.add_argument(
        "--rate-limits",
        action="store_true",
        help="keep pushgate's push rate limits on (default: off, see pushgate_env)",
    )
    parser.add_argument(
        "--code",
        type=Path,
        help="serve pushgate from this source tree (e.g. a `git archive` of a commit) instead of the repo",
    )
    parser.add_argument(
        "--synchronous",
        choices=("OFF", "NORMAL", "FULL", "EXTRA"),
        help="pushgate's PUSHGATE_STORAGE_SQLITE_SYNCHRONOUS (default: its own default, FULL)",
    )


def parse_server_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, and check that ``--code`` names a pushgate source tree."""
    args = parser.parse_args(argv)
    if args.code is not None:
        args.code = args.code.resolve()
        if not (args.code / "gateway" / "cli.py").is_file():
            parser.error(f"--code {args.code}: no gateway/cli.py there")
    return args


def warn_if_busy(other_cpu_shares: Sequence[float]) -> None:
    """Say so when other processes competed for the cores during some rows (their figures are low)."""
    busy = sum(1 for share in other_cpu_shares if share > OTHER_CPU_WARNING)
    if busy:
        print(
            f"WARNING: other processes used over {OTHER_CPU_WARNING:.0%} of a core in {busy} of "
            f"{len(other_cpu_shares)} rows: those figures are understated; run again on a quiet machine"
        )
