"""MQTT relay, side by side in one run: stock amqtt 0.12.1, pushgate's broker (ACL on) and Debian's mosquitto.

Each broker runs in its own subprocess on 127.0.0.1. The load comes from raw sockets in this process
(asyncio protocols, uvloop when installed): packets are encoded before the clock starts, several publisher
connections write them in batches, one subscriber counts what arrives and acknowledges QoS 1 at once.
An MQTT client library would measure itself (paho tops out near the brokers' figures on two cores).

Figures, per broker:
- relay msgs/s at QoS 0 and QoS 1 (publish and subscription at the same QoS): messages the subscriber
  received per second over ``--duration`` seconds, after ``--warmup`` seconds of the same load; at most
  ``--window`` messages are sent but not yet received, so no broker is asked to buffer without bound;
- broker CPU µs per message: the broker process's CPU time over the same interval / messages received;
- p50/p99 latency at a paced 1,000 msgs/s (one publisher; send time in the payload; one clock);
- relay at QoS 0 with 0, 200 and 2,000 unrelated subscriptions held, one per idle connection (as
  pushgate's devices hold them): ``bench/dev/<n>``, none matching ``bench/x``;
- RSS per idle connection at 2,000: the broker's RSS growth from opening them / their number;
then pushgate's durable push path with the same load: the publishers push text on
``pushgate/bench/push``, the gateway commits each message to SQLite (a QoS 1 PUBACK only after the
commit) and its outbox publishes the JSON envelope on ``pushgate/bench/message``, where the subscriber
counts it; next to the stock relay figures (the issue's target: at least 3x).

pushgate's clients authenticate with a user token (the ACL is checked on every publish and delivery);
amqtt and mosquitto allow anonymous clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import harness
from harness import (
    PUSHGATE,
    READY_TIMEOUT,
    Server,
    add_server_arguments,
    code_version,
    cpu_seconds,
    family_cpu_seconds,
    machine_busy_seconds,
    parse_server_arguments,
    percentile,
    pushgate_env,
    run_amqtt,
    run_mosquitto,
    run_pushgate,
    warn_if_busy,
)

TOPIC = "bench/x"
PAYLOAD_SIZE = 100  # bytes per message, as in the study
PUBLISHERS = 4  # publisher connections in the throughput runs
BATCH = 50  # messages per write of a publisher
SETUP_TIMEOUT = 30.0  # seconds for CONNACK/SUBACK and for a paced run to arrive
DRAIN_TIMEOUT = 5.0  # seconds a relay run's last messages may take after the load stops (to count losses)
CONNECT_CONCURRENCY = 50  # idle connections opened at the same time
BROKERS = ("amqtt", "pushgate", "mosquitto")


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    header = bytearray([first])
    n = len(body)
    while True:
        byte, n = n & 0x7F, n >> 7
        header.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(header) + body


def connect_packet(client_id: str, password: str | None) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, keep-alive 0 (no PINGREQ disturbs the counts)."""
    flags = 0x02 | (0xC0 if password else 0)
    credentials = _string("bench") + _string(password) if password else b""
    return _packet(0x10, _string("MQTT") + bytes([4, flags, 0, 0]) + _string(client_id) + credentials)


def subscribe_packet(topic: str, qos: int) -> bytes:
    return _packet(0x82, b"\x00\x01" + _string(topic) + bytes([qos]))


def publish_packet(payload: bytes, qos: int, pid: int = 0, topic: str = TOPIC) -> bytes:
    return _packet(0x30 | (qos << 1), _string(topic) + (pid.to_bytes(2, "big") if qos else b"") + payload)


class Connection(asyncio.Protocol):
    """One raw MQTT connection: counts PUBLISHes (acknowledging QoS 1 ones), PUBACKs, and hands other
    packets to whoever waits for them (CONNACK, SUBACK)."""

    def __init__(self, on_received: Callable[[], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.received = 0
        self.pubacks = 0
        self.latencies: list[int] | None = None  # ns per message, when the payload carries its send time
        self.on_received = on_received
        self.control: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        pos, end = 0, len(buf)
        received = 0
        acks: list[bytes] = []
        latencies = self.latencies
        while end - pos >= 2:
            first = buf[pos]
            index, length, shift, complete = pos + 1, 0, 0, False
            while index < end:
                byte = buf[index]
                index += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    complete = True
                    break
                shift += 7
            if not complete or index + length > end:
                break
            kind = first >> 4
            if kind == 3:
                received += 1
                topic_end = index + 2 + ((buf[index] << 8) | buf[index + 1])
                payload_at = topic_end
                if first & 0x06:
                    acks.append(b"\x40\x02" + buf[topic_end : topic_end + 2])
                    payload_at += 2
                if latencies is not None:
                    latencies.append(
                        time.perf_counter_ns() - int.from_bytes(buf[payload_at : payload_at + 8])
                    )
            elif kind == 4:
                self.pubacks += 1
            else:
                self.control.put_nowait((kind, buf[index : index + length]))
            pos = index + length
        self.buffer = buf[pos:]
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))
        if received:
            self.received += received
            if self.on_received is not None:
                self.on_received()

    async def expect(self, kind: int) -> bytes:
        async with asyncio.timeout(SETUP_TIMEOUT):
            got, body = await self.control.get()
        if got != kind:
            raise RuntimeError(f"expected packet type {kind}, got {got}: {body!r}")
        return body

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_connection(
    addr: tuple[str, int],
    client_id: str,
    password: str | None,
    subscribe: tuple[str, int] | None = None,
    on_received: Callable[[], None] | None = None,
) -> Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Connection(on_received), *addr)
    assert conn.transport is not None
    conn.transport.write(connect_packet(client_id, password))
    connack = await conn.expect(2)
    if connack[1] != 0:
        raise RuntimeError(f"CONNECT {client_id} refused: return code {connack[1]}")
    if subscribe is not None:
        conn.transport.write(subscribe_packet(*subscribe))
        suback = await conn.expect(9)
        if suback[2] == 0x80:
            raise RuntimeError(f"SUBSCRIBE {subscribe[0]} refused")
    return conn


@dataclass
class Relay:
    rate: float  # messages received per second over the measured interval
    cpu_us: float  # broker CPU µs per message received
    lost: int  # sent but never received (QoS 0 may drop; QoS 1 must not)
    other: float  # share of a core the rest of the machine used meanwhile


@dataclass
class Figures:
    """Everything measured on one broker."""

    broker: str
    relay: dict[tuple[int, int], Relay] = field(default_factory=dict)  # (qos, unrelated subscriptions)
    latency: dict[int, tuple[float, float]] = field(default_factory=dict)  # qos -> p50, p99 ms
    rss_per_connection: float | None = None  # KiB
    push: dict[int, Relay] = field(default_factory=dict)  # qos -> pushgate's durable push path
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Route:
    """Where a load publishes, where its subscriber listens, and what each message carries."""

    publish: str
    subscribe: str
    payload: bytes


RELAY = Route(TOPIC, TOPIC, bytes(PAYLOAD_SIZE))
# pushgate's push path: a device's text on ``…/push`` is stored, then its JSON envelope published on
# ``…/message`` (at QoS 1, so the subscriber gets min(its QoS, 1)).
PUSH = Route("pushgate/bench/push", "pushgate/bench/message", b"m" * PAYLOAD_SIZE)


class Load:
    """Publishers writing pre-encoded batches while fewer than ``window`` messages are unreceived."""

    def __init__(
        self, pubs: list[Connection], sub: Connection, qos: int, window: int, route: Route = RELAY
    ) -> None:
        self.pubs, self.sub, self.qos, self.window = pubs, sub, qos, window
        self.sent = 0
        self.stop = False
        self.room = asyncio.Event()
        sub.on_received = self._received
        payload, topic = route.payload, route.publish
        if qos == 0:
            self.batches = [publish_packet(payload, 0, topic=topic) * BATCH]
        else:  # packet ids 1..65535 in turn, BATCH per write
            packets = [publish_packet(payload, 1, pid, topic) for pid in range(1, 65536)]
            self.batches = [b"".join(packets[i : i + BATCH]) for i in range(0, 65535 - BATCH + 1, BATCH)]

    def _received(self) -> None:
        if self.sent - self.sub.received < self.window:
            self.room.set()

    async def _publish(self, pub: Connection) -> None:
        turn = 0
        while not self.stop:
            if self.sent - self.sub.received >= self.window:
                self.room.clear()
                await self.room.wait()
                continue
            await pub.writable.wait()
            if pub.closed.done():
                raise RuntimeError("the broker closed a publisher's connection")
            assert pub.transport is not None
            pub.transport.write(self.batches[turn])
            turn = (turn + 1) % len(self.batches)
            self.sent += BATCH
            await asyncio.sleep(0)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self._publish(pub)) for pub in self.pubs]
        try:
            yield
        finally:
            self.stop = True
            self.room.set()
            await asyncio.gather(*tasks)


async def relay(
    server: Server, password: str | None, qos: int, args: argparse.Namespace, tag: str, route: Route = RELAY
) -> Relay:
    addr = server.mqtt_addr
    sub = await open_connection(addr, f"relay-sub-{tag}", password, subscribe=(route.subscribe, qos))
    pubs = [await open_connection(addr, f"relay-pub-{tag}-{i}", password) for i in range(PUBLISHERS)]
    try:
        load = Load(pubs, sub, qos, args.window, route)
        async with load.running():
            await asyncio.sleep(args.warmup)
            received0, cpu0, busy0, mine0 = sub.received, _cpu(server), machine_busy_seconds(), cpu_seconds()
            start = time.perf_counter()
            await asyncio.sleep(args.duration)
            received1, cpu1, busy1, mine1 = sub.received, _cpu(server), machine_busy_seconds(), cpu_seconds()
            elapsed = time.perf_counter() - start
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while sub.received < load.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # stragglers: only to count losses
        count = max(received1 - received0, 1)
        broker_cpu = cpu1 - cpu0
        other = (busy1 - busy0) - broker_cpu - (mine1 - mine0)
        return Relay(count / elapsed, broker_cpu / count * 1e6, load.sent - sub.received, other / elapsed)
    finally:
        for conn in (sub, *pubs):
            conn.close()


async def paced_latency(
    server: Server, password: str | None, qos: int, args: argparse.Namespace
) -> tuple[float, float]:
    """p50 and p99 in ms of ``--paced-count`` messages sent one at a time at ``--rate`` per second."""
    addr = server.mqtt_addr
    sub = await open_connection(addr, f"paced-sub-{qos}", password, subscribe=(TOPIC, qos))
    pub = await open_connection(addr, f"paced-pub-{qos}", password)
    sub.latencies = []
    try:
        loop = asyncio.get_running_loop()
        interval = 1.0 / args.rate
        start = loop.time()
        assert pub.transport is not None
        pad = bytes(PAYLOAD_SIZE - 8)
        for i in range(args.paced_count):
            delay = start + i * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            stamp = time.perf_counter_ns().to_bytes(8, "big")
            pub.transport.write(publish_packet(stamp + pad, qos, (i % 65535) + 1))
        async with asyncio.timeout(SETUP_TIMEOUT):
            while sub.received < args.paced_count:
                await asyncio.sleep(0.01)
        values = sorted(v / 1e6 for v in sub.latencies)
        return percentile(values, 50), percentile(values, 99)
    finally:
        sub.close()
        pub.close()


async def hold_idle(
    server: Server, password: str | None, first: int, count: int, held: list[Connection]
) -> None:
    """Open ``count`` more idle connections, each subscribed to its own ``bench/dev/<n>`` at QoS 1."""
    addr = server.mqtt_addr
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(n: int) -> None:
        async with limit:
            held.append(await open_connection(addr, f"dev-{n}", password, subscribe=(f"bench/dev/{n}", 1)))

    await asyncio.gather(*(one(n) for n in range(first, first + count)))


def _cpu(server: Server) -> float:
    """The broker's CPU, with its helper processes' (pushgate's storage journal)."""
    return family_cpu_seconds(server.proc.pid)


def _rss_kib(server: Server) -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def measure(name: str, server: Server, password: str | None, args: argparse.Namespace) -> Figures:
    figures = Figures(name)
    for qos in (0, 1):
        print(f"  {name}: relay QoS {qos}", file=sys.stderr, flush=True)
        figures.relay[(qos, 0)] = await relay(server, password, qos, args, f"q{qos}")
    for qos in (0, 1):
        print(f"  {name}: paced latency QoS {qos}", file=sys.stderr, flush=True)
        figures.latency[qos] = await paced_latency(server, password, qos, args)
    held: list[Connection] = []
    try:
        rss0 = _rss_kib(server)
        for count in args.subscriptions:
            if count == 0:
                continue
            print(f"  {name}: {count} idle connections with a subscription each", file=sys.stderr, flush=True)
            await hold_idle(server, password, len(held), count - len(held), held)
            figures.relay[(0, count)] = await relay(server, password, 0, args, f"s{count}")
        if held:
            figures.rss_per_connection = (_rss_kib(server) - rss0) / len(held)
    finally:
        for conn in held:
            conn.close()
    if name == "pushgate" and not args.no_push:  # last: it fills the database
        for qos in (0, 1):
            print(f"  {name}: durable push path QoS {qos}", file=sys.stderr, flush=True)
            figures.push[qos] = await relay(server, password, qos, args, f"push{qos}", PUSH)
    return figures


@contextlib.contextmanager
def broker(name: str, args: argparse.Namespace) -> Iterator[tuple[Server, str | None]]:
    if name == "amqtt":
        with run_amqtt() as server:
            yield server, None
    elif name == "mosquitto":
        with run_mosquitto() as server:
            yield server, None
    else:
        with tempfile.TemporaryDirectory(prefix="pushgate-relay-") as data_dir:
            env = pushgate_env(data_dir, code_dir=args.code)
            created = subprocess.run(
                [PUSHGATE, "user", "create", "bench"],
                env=env,
                capture_output=True,
                text=True,
                timeout=READY_TIMEOUT,
                check=True,
            )
            token = next(line.split()[1] for line in created.stdout.splitlines() if line.startswith("token:"))
            with run_pushgate(data_dir=data_dir, code_dir=args.code) as server:
                yield server, token


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def report(all_figures: list[Figures], args: argparse.Namespace, loop_name: str) -> None:
    names = [f.broker for f in all_figures]
    by_name = {f.broker: f for f in all_figures}
    print()
    print(
        f"MQTT relay on 127.0.0.1: {PUBLISHERS} publishers -> 1 subscriber, {PAYLOAD_SIZE}-byte payloads, "
        f"window {args.window}; each figure over {args.duration:g}s after {args.warmup:g}s of the same load"
    )
    print(
        f"pushgate code: {code_version(args.code)}; {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}; event loop (harness, pushgate, amqtt): {loop_name}"
    )
    print("pushgate: clients authenticated with a user token, ACL checked; amqtt, mosquitto: anonymous")
    width = 12
    print(f"{'figure':<34}" + "".join(f"{n:>{width}}" for n in names))
    print("-" * (34 + width * len(names)))

    def row(label: str, value: Callable[[Figures], str]) -> None:
        print(f"{label:<34}" + "".join(f"{value(by_name[n]):>{width}}" for n in names))

    def relay_cell(qos: int, subs: int, what: str) -> Callable[[Figures], str]:
        def cell(f: Figures) -> str:
            r = f.relay.get((qos, subs))
            if r is None:
                return "-"
            return {"rate": f"{r.rate:,.0f}", "cpu": f"{r.cpu_us:.1f}", "lost": str(r.lost)}[what]

        return cell

    def push_cell(qos: int, what: str) -> Callable[[Figures], str]:
        def cell(f: Figures) -> str:
            r = f.push.get(qos)
            if r is None:
                return "-"
            return f"{r.rate:,.0f}" if what == "rate" else f"{r.cpu_us:.1f}"

        return cell

    for qos in (0, 1):
        row(f"QoS {qos} relay, msgs/s", relay_cell(qos, 0, "rate"))
        row(f"QoS {qos} broker CPU, µs/msg", relay_cell(qos, 0, "cpu"))
        row(f"QoS {qos} lost (sent, not received)", relay_cell(qos, 0, "lost"))
    for qos in (0, 1):
        row(
            f"QoS {qos} paced {args.rate:g}/s p50/p99 ms",
            lambda f, q=qos: "{:.2f}/{:.2f}".format(*f.latency[q]) if q in f.latency else "-",
        )
    for subs in args.subscriptions:
        if subs:
            row(f"QoS 0 relay, {subs} unrelated subs", relay_cell(0, subs, "rate"))
    for qos in (0, 1):
        for what, label in (("rate", "msgs/s"), ("cpu", "CPU µs/msg")):
            row(f"QoS {qos} durable push path, {label}", push_cell(qos, what))
    top = max(args.subscriptions)
    row(
        f"RSS per idle connection at {top}, KiB",
        lambda f: f"{f.rss_per_connection:.1f}" if f.rss_per_connection is not None else "-",
    )
    busy = [r.other for f in all_figures for r in (*f.relay.values(), *f.push.values())]
    print(f"(other processes used up to {max(busy, default=0):.0%} of a core during the relay rows)")

    pg, mq, st = by_name.get("pushgate"), by_name.get("mosquitto"), by_name.get("amqtt")
    print()
    if pg and mq:
        for qos in (0, 1):
            ratio = _ratio(pg.relay[(qos, 0)].rate, mq.relay[(qos, 0)].rate)
            print(f"pushgate / mosquitto relay, QoS {qos}: {ratio} (target >= 0.8)")
    if pg and top:
        ratio = _ratio(pg.relay.get((0, top), Relay(0, 0, 0, 0)).rate, pg.relay[(0, 0)].rate)
        print(f"pushgate relay with {top} unrelated subscriptions / with none: {ratio} (target >= 0.9)")
    if pg and st and pg.rss_per_connection is not None and st.rss_per_connection is not None:
        ratio = _ratio(pg.rss_per_connection, st.rss_per_connection)
        print(f"RSS per idle connection, pushgate / amqtt: {ratio} (target < 1)")
    if pg:
        for qos, push in sorted(pg.push.items()):
            stock = st.relay[(qos, 0)].rate if st else None
            print(
                f"pushgate durable push path, QoS {qos}: {push.rate:,.0f} msgs/s; "
                f"/ stock amqtt relay at QoS {qos}: {_ratio(push.rate, stock)} (target >= 3)"
            )
    warn_if_busy(busy)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs and at most 500 idle connections")
    parser.add_argument("--brokers", nargs="+", choices=BROKERS, default=list(BROKERS))
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per relay figure")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--window", type=int, default=500, help="messages sent but not yet received")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced latency: messages per second")
    parser.add_argument("--paced-count", type=int, default=3000, help="paced latency: messages")
    parser.add_argument("--subscriptions", type=int, nargs="+", default=[0, 200, 2000])
    parser.add_argument("--no-push", action="store_true", help="skip the pushgate push-path figure")
    add_server_arguments(parser)
    args = parse_server_arguments(parser, argv)
    if args.quick:
        args.duration, args.warmup, args.paced_count = 1.0, 0.3, 1000
        args.subscriptions = [0, 100, 500]
    if 0 not in args.subscriptions:
        args.subscriptions.insert(0, 0)
    return args


def _raise_file_limit(needed: int) -> None:
    """Thousands of sockets here and in each broker (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(needed, soft), hard), hard))


async def _main(args: argparse.Namespace) -> list[Figures]:
    results = []
    for name in args.brokers:
        if name == "mosquitto" and not Path(harness.MOSQUITTO).exists():
            print(
                "mosquitto is not installed (apt-get install mosquitto, or make bench): skipped",
                file=sys.stderr,
            )
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        with broker(name, args) as (server, password):
            results.append(await measure(name, server, password, args))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    _raise_file_limit(2 * max(args.subscriptions) + 256)
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        loop_name = "asyncio"
        figures = asyncio.run(_main(args))
    else:
        loop_name = "uvloop"
        figures = uvloop.run(_main(args))
    report(figures, args, loop_name)
    # A QoS 1 message lost by amqtt or pushgate is a failure; mosquitto 2.0.11 logs "Outgoing messages
    # are being dropped" for the QoS 1 subscriber in some runs, which the table reports as it is.
    lost_qos1 = any(
        r.lost
        for f in figures
        if f.broker != "mosquitto"
        for r in (f.relay.get((1, 0)), f.push.get(1))
        if r is not None
    )
    return 1 if lost_qos1 else 0


if __name__ == "__main__":
    sys.exit(main())
