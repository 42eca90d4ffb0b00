"""Web Push fan-out: one message to 10,000 browser subscriptions, beside a bare aiohttp POST loop.

Both runs send to the same local Web Push service (``tests/webpush_service.py`` in benchmark mode: TLS
with a test CA, every POST answered 201, nothing decrypted) in its own subprocess, with the same number
of requests in flight:

- *bare*: this process POSTs 10,000 bodies of the size of pushgate's encrypted payload through one
  ``aiohttp.ClientSession`` (keep-alive), N workers in a loop: the ceiling of the HTTP client alone.
- *pushgate*: ``pushgate serve`` in its own subprocess with 10,000 web devices registered (seeded in its
  database before the start; registration is not what is measured). One ``POST /api/push/bench``: the
  gateway commits 10,000 outbox rows, then its Web Push lane encrypts (aes128gcm, a fresh ECDH key per
  request, agreed in pushgate's key agreement helper process), VAPID-signs and POSTs each, and records
  every outcome. pushgate's CPU is its own and its helper's.

Each rate is requests the service received ÷ the time from the start of the run (first request sent,
or the push POSTed) to the service's last arrival; the ratio pushgate ÷ bare is the figure (goal >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import ssl
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from harness import (
    REPO_DIR,
    Server,
    _server,  # the shared start/ready/stop logic for a server subprocess
    code_version,
    cpu_seconds,
    family_cpu_seconds,
    machine_busy_seconds,
    pushgate_env,
)

from gateway.admin import Admin
from gateway.config import StorageConfig
from gateway.ids import new_id
from gateway.storage import database
from gateway.storage.models import Device, utcnow
from gateway.vapid import b64url

PUSHGATE = str(Path(sys.executable).parent / "pushgate")
_SERVICE_READY = re.compile(r"webpush service ready: (?P<origin>\S+)")
_PUSHGATE_READY = re.compile(r"pushgate ready: http=(?P<http>\S+) mqtt=(?P<mqtt>\S+)")
PAYLOAD_BYTES = 380  # about what pushgate's encrypted body is for the message sent below


@contextlib.contextmanager
def run_service(ca_cert: str, ca_key: str) -> Iterator[Server]:
    argv = [sys.executable, str(REPO_DIR / "tests" / "webpush_service.py"), "--ca-cert", ca_cert]
    with _server("webpush-service", [*argv, "--ca-key", ca_key], dict(os.environ), _SERVICE_READY) as srv:
        yield srv


async def _stats(client: httpx.AsyncClient) -> dict[str, float]:
    return (await client.get("/stats")).json()  # type: ignore[no-any-return]


async def _wait_for(client: httpx.AsyncClient, count: int, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while (stats := await _stats(client))["count"] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {stats['count']} of {count} requests arrived within {timeout:g}s")
        await asyncio.sleep(0.1)
    return stats


async def bare_loop(origin: str, tls: ssl.SSLContext, count: int, concurrency: int) -> float:
    """POST ``count`` bodies with ``concurrency`` workers; returns the start time (time.monotonic())."""
    body = os.urandom(PAYLOAD_BYTES)
    headers = {"TTL": "86400", "Content-Encoding": "aes128gcm", "Urgency": "normal"}
    left = iter(range(count))
    connector = aiohttp.TCPConnector(ssl=tls, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i in left:
                async with session.post(f"{origin}/push/d{i}", data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 201:
                        raise RuntimeError(f"bare POST answered {response.status}")

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return started


async def seed(data_dir: str, origin: str, count: int) -> str:
    """The user, its topic and ``count`` web devices, written to the database before pushgate starts."""
    engine = database.create_engine(StorageConfig(data_dir=data_dir))
    try:
        await database.upgrade(engine)
        sessions = database.session_factory(engine)
        admin = Admin(sessions)
        created = await admin.create_user("bench")
        await admin.create_topic("bench", owner="bench")
        now = utcnow()
        auth = b64url(os.urandom(16))
        async with sessions() as session:
            for i in range(count):
                point = (
                    ec.generate_private_key(ec.SECP256R1())
                    .public_key()
                    .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
                )
                session.add(
                    Device(
                        id=new_id(),
                        user_id=created.id,
                        platform="web",
                        webpush_endpoint=f"{origin}/push/d{i}",
                        webpush_p256dh=b64url(point),
                        webpush_auth=auth,
                        device_name=f"browser {i}",
                        tags=[],
                        topics=[],
                        status="active",
                        created_at=now,
                        last_seen_at=now,
                    )
                )
            await session.commit()
        return created.secret
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="webpush-bench-") as tmp:
        ca = trustme.CA()
        ca_cert, ca_key = f"{tmp}/ca.pem", f"{tmp}/ca.key"
        ca.cert_pem.write_to_path(ca_cert)
        ca.private_key_pem.write_to_path(ca_key)
        tls = ssl.create_default_context(cafile=ca_cert)
        with run_service(ca_cert, ca_key) as service:
            origin = service.endpoints["origin"]
            async with httpx.AsyncClient(base_url=origin, verify=tls, timeout=30) as stats:
                print(
                    f"Web Push fan-out to {args.count} subscriptions on a local push service ({origin}), TLS"
                )
                python = sys.version.split()[0]
                print(f"pushgate code: {code_version(args.code)}; {os.cpu_count()} CPUs; Python {python}")
                print(
                    f"in flight at once: {args.concurrency} (bare workers = pushgate [webpush] concurrency)"
                )
                rows = []

                await stats.delete("/stats")
                busy0, own0, svc0 = machine_busy_seconds(), cpu_seconds(), cpu_seconds(service.proc.pid)
                started = await bare_loop(origin, tls, args.count, args.concurrency)
                done = await _wait_for(stats, args.count, args.timeout)
                wall = done["last"] - started
                rows.append(("bare aiohttp", done["count"], wall, cpu_seconds() - own0, None))
                svc_bare = cpu_seconds(service.proc.pid) - svc0
                other_bare = machine_busy_seconds() - busy0 - rows[-1][3] - svc_bare

                data_dir = f"{tmp}/data"
                token = await seed(data_dir, origin, args.count)
                env = pushgate_env(data_dir, code_dir=args.code)
                env |= {
                    "PUSHGATE_WEBPUSH_CA_FILE": ca_cert,
                    "PUSHGATE_WEBPUSH_ALLOWED_HOSTS": "127.0.0.1",
                    "PUSHGATE_WEBPUSH_CONCURRENCY": str(args.concurrency),
                }
                with _server("pushgate", [PUSHGATE, "serve"], env, _PUSHGATE_READY) as gateway:
                    await stats.delete("/stats")
                    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http:
                        busy0, gw0 = machine_busy_seconds(), family_cpu_seconds(gateway.proc.pid)
                        svc0, gw_own0 = cpu_seconds(service.proc.pid), cpu_seconds(gateway.proc.pid)
                        started = time.monotonic()
                        pushed = await http.post(
                            "/api/push/bench",
                            json={"title": "Fan-out", "message": "one message to every browser"},
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        answered = time.monotonic() - started
                        if pushed.status_code != 200 or pushed.json()["subscribers"] != args.count:
                            raise RuntimeError(f"push refused or short: {pushed.status_code} {pushed.text}")
                        try:
                            done = await _wait_for(stats, args.count, args.timeout)
                        except RuntimeError:
                            print(gateway.output()[-3000:])  # what the gateway said about it
                            raise
                        wall = done["last"] - started
                        gw_cpu = family_cpu_seconds(gateway.proc.pid) - gw0
                        helper_cpu = gw_cpu - (cpu_seconds(gateway.proc.pid) - gw_own0)
                        svc_gw = cpu_seconds(service.proc.pid) - svc0
                        other_gw = machine_busy_seconds() - busy0 - gw_cpu - svc_gw
                        rows.append(("pushgate", done["count"], wall, gw_cpu, answered))

        print(f"{'sender':<14}{'requests':>9}{'seconds':>9}{'req/s':>9}{'sender cpu':>12}{'ms/req':>8}")
        print("-" * 61)
        for name, n, seconds, cpu, _ in rows:
            print(
                f"{name:<14}{n:>9.0f}{seconds:>9.2f}{n / seconds:>9.0f}{cpu / seconds:>11.0%}"
                f"{cpu * 1000 / n:>8.3f}"
            )
        bare_rate = rows[0][1] / rows[0][2]
        gate_rate = rows[1][1] / rows[1][2]
        print(f"push answered (10,000 outbox rows committed) after {rows[1][4] * 1000:.0f} ms")
        print(f"pushgate's cpu includes its key agreement helper's {helper_cpu:.1f}s")
        print(f"push service cpu: {svc_bare:.1f}s during bare, {svc_gw:.1f}s during pushgate")
        print(f"other processes' cpu: {other_bare:.1f}s during bare, {other_gw:.1f}s during pushgate")
        print(f"ratio pushgate / bare: {gate_rate / bare_rate:.2f} (goal >= 0.5)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000, help="subscriptions (and bare requests)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight, both runs")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds each run may take")
    parser.add_argument("--code", type=Path, help="serve pushgate from this source tree")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
