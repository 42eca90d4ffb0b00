"""HTTP push: requests/s and latency of ``POST /api/push/<topic>`` on pushgate's Hypercorn bridge.

A fresh ``pushgate serve`` (own subprocess, temporary SQLite database, public topic ``bench``) is driven
by one ``httpx.AsyncClient`` with N concurrent workers over keep-alive connections. Every 200 answer
means the message was committed (group commit: concurrent requests share a transaction). Nobody is
subscribed over MQTT, so each message's MQTT delivery is recorded as waiting.

For comparison, the same load on ``GET /healthz`` (Quart + Hypercorn + one ``SELECT 1``, no write)
shows what the HTTP stack and this client cost without the publish path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from dataclasses import dataclass

import httpx
from harness import (
    LatencyStats,
    Server,
    add_server_arguments,
    code_version,
    cpu_seconds,
    machine_busy_seconds,
    parse_server_arguments,
    run_pushgate,
    summarize,
    warn_if_busy,
)


@dataclass(frozen=True, slots=True)
class Result:
    label: str
    concurrency: int
    requests: int
    ok: int
    errors: list[str]
    elapsed: float
    latency: LatencyStats
    server_cpu: float  # CPU seconds of the server process during the run
    client_cpu: float  # CPU seconds of this harness process during the run
    other_cpu: float  # CPU seconds the rest of the machine used meanwhile (should be near 0)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else float("nan")


async def _load(
    client: httpx.AsyncClient,
    server: Server,
    label: str,
    method: str,
    path: str,
    count: int,
    concurrency: int,
    timeout: float,
) -> Result:
    """Send ``count`` requests from ``concurrency`` workers; each counts as ok only on a 200 success."""
    indices = iter(range(count))  # shared by the workers; next() never yields inside one event loop
    latencies: list[int] = []
    errors: list[str] = []

    async def worker() -> None:
        for i in indices:
            start = time.perf_counter_ns()
            try:
                if method == "POST":
                    content = f"bench http {i} {start}"
                    response = await client.post(
                        path, content=content, headers={"Content-Type": "text/plain"}
                    )
                else:
                    response = await client.get(path)
                ok = response.status_code == 200 and (
                    method != "POST" or response.json().get("success") is True
                )
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if ok:
                latencies.append(time.perf_counter_ns() - start)
            else:
                errors.append(f"{response.status_code}: {response.text[:200]}")

    server_cpu0, client_cpu0, machine0 = cpu_seconds(server.proc.pid), cpu_seconds(), machine_busy_seconds()
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(worker() for _ in range(concurrency)))
    except TimeoutError:
        errors.append(f"timed out after {timeout:g}s")
    elapsed = time.perf_counter() - start
    server_cpu, client_cpu = cpu_seconds(server.proc.pid) - server_cpu0, cpu_seconds() - client_cpu0
    return Result(
        label=label,
        concurrency=concurrency,
        requests=len(latencies) + len(errors),
        ok=len(latencies),
        errors=errors,
        elapsed=elapsed,
        latency=summarize(latencies),
        server_cpu=server_cpu,
        client_cpu=client_cpu,
        other_cpu=machine_busy_seconds() - machine0 - server_cpu - client_cpu,
    )


async def _run(server: Server, args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    targets = [("POST /api/push/bench", "POST", "/api/push/bench")]
    if args.healthz:
        targets.append(("GET /healthz", "GET", "/healthz"))
    limits = httpx.Limits(
        max_connections=max(args.concurrency), max_keepalive_connections=max(args.concurrency)
    )
    async with httpx.AsyncClient(base_url=server.http_url, limits=limits, timeout=30.0) as client:
        for label, method, path in targets:
            for concurrency in args.concurrency:
                if args.warmup:
                    await _load(client, server, label, method, path, args.warmup, concurrency, args.timeout)
                results.append(
                    await _load(client, server, label, method, path, args.count, concurrency, args.timeout)
                )
    return results


def _print(results: list[Result], args: argparse.Namespace) -> None:
    print()
    print(
        f"HTTP on pushgate's Hypercorn bridge, 127.0.0.1; {args.count} requests per row after {args.warmup} "
        "warm-up; httpx.AsyncClient, keep-alive, one connection per worker"
    )
    print(
        f"pushgate code: {code_version(args.code)}; {os.cpu_count()} CPUs; Python {platform.python_version()}"
    )
    sync = args.synchronous or "FULL (default)"
    limits = "on" if args.rate_limits else "off"
    print(
        f"POST answers 200 after the SQLite commit (synchronous={sync}); body: short text/plain message; "
        f"push rate limits {limits}"
    )
    header = (
        f"{'endpoint':<22}{'conc':>5}{'ok':>7}{'err':>5}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'srv cpu':>9}{'srv ms/req':>11}{'cli cpu':>9}{'oth cpu':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.label:<22}{r.concurrency:>5}{r.ok:>7}{len(r.errors):>5}{r.rate:>8.0f}{r.latency.p50:>9.2f}"
            f"{r.latency.p99:>9.2f}{r.latency.max:>9.2f}{r.server_cpu / r.elapsed:>9.0%}"
            f"{1000 * r.server_cpu / max(r.ok, 1):>11.2f}{r.client_cpu / r.elapsed:>9.0%}"
            f"{max(0.0, r.other_cpu) / r.elapsed:>9.0%}"
        )
        for error in r.errors[:3]:
            print(f"    error: {error}")
    print(
        "srv/cli cpu: CPU time of the server / of this harness over the run's wall time (100% = one core); "
        "oth cpu: the rest of the machine meanwhile (should be ~0%: else another process competed)"
    )
    warn_if_busy([r.other_cpu / r.elapsed for r in results])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000, help="requests per row (default 2000)")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 16],
        help="concurrent workers, one row each (default: 1 16)",
    )
    parser.add_argument("--warmup", type=int, default=200, help="requests sent first and not counted")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per row (default 60)")
    parser.add_argument(
        "--no-healthz", dest="healthz", action="store_false", help="skip the GET /healthz comparison rows"
    )
    add_server_arguments(parser)
    args = parse_server_arguments(parser, argv)
    if args.count < 1 or min(args.concurrency) < 1:
        parser.error("--count and --concurrency must be at least 1")

    with run_pushgate(
        topic="bench", synchronous=args.synchronous, code_dir=args.code, rate_limits=args.rate_limits
    ) as server:
        results = asyncio.run(_run(server, args))
    _print(results, args)
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
