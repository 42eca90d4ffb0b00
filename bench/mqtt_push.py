"""MQTT push -> subscriber: pushgate's durable push path next to a bare amqtt 0.12.1 relay, in one run.

pushgate: a device publishes text on ``pushgate/bench/push``; the gateway commits it to SQLite, then its
outbox publishes the JSON envelope on ``pushgate/bench/message``, where the hub subscribes. amqtt: the same
text on ``bench/x`` relayed as is to a subscriber on ``bench/x``; nothing is stored. Each server runs in its
own subprocess; the publisher and the subscriber are paho-mqtt clients (each with its loop_start thread)
in this process, so send and receive times come from the same clock (``time.perf_counter_ns``).

Modes, per target and QoS:
- burst: send as fast as the window allows. Throughput = messages received / (last receive - first send).
  Latency includes the queueing the window permits (Little's law: about window / throughput).
- paced (``--rate``): a fixed send rate below capacity, so latency is the path's own cost, not queueing.

Window: at most ``--window`` messages sent but not yet received by the subscriber, and, for QoS 1, at most
``--window`` PUBLISHes not yet acknowledged (paho ``max_inflight_messages_set``), so the publisher
pipelines instead of waiting for each PUBACK, and a backlog cannot grow without bound inside a server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from harness import (
    LatencyStats,
    Server,
    add_server_arguments,
    code_version,
    cpu_seconds,
    machine_busy_seconds,
    parse_server_arguments,
    run_amqtt,
    run_mosquitto,
    run_pushgate,
    summarize,
    warn_if_busy,
)
from paho.mqtt.enums import CallbackAPIVersion

CONNECT_TIMEOUT = 10.0  # seconds for CONNACK and SUBACK


@dataclass(frozen=True, slots=True)
class Target:
    """Where to publish and subscribe on one server, and how to get the sent text back from a payload."""

    name: str
    server: Server
    push_topic: str
    sub_topic: str
    decode: Callable[[bytes], str]
    error_topic: str | None = None  # where the server answers a refused push (pushgate: ``…/error``)


@dataclass(frozen=True, slots=True)
class Result:
    target: str
    qos: int
    mode: str
    sent: int
    received: int
    duplicates: int
    refused: int  # pushes the server answered on its error topic instead of delivering
    first_refusal: str | None
    elapsed: float  # seconds from first send to last first-receive
    latency: LatencyStats
    puback: LatencyStats | None  # QoS 1: PUBLISH -> PUBACK, i.e. for pushgate the commit to SQLite
    wall: float  # seconds from first send until the run ended (all received, or the timeout)
    server_cpu: float  # CPU seconds used by the server process during the run
    client_cpu: float  # same for this harness process (publisher + subscriber + bookkeeping)
    other_cpu: float  # CPU seconds the rest of the machine used meanwhile (should be near 0)
    timed_out: bool

    @property
    def rate(self) -> float:
        return self.received / self.elapsed if self.elapsed > 0 else float("nan")


def _envelope_text(payload: bytes) -> str:
    return str(json.loads(payload)["message"])


def _raw_text(payload: bytes) -> str:
    return payload.decode()


def _connect(
    client: mqtt.Client, host: str, port: int, subscribe: list[tuple[str, int]] | None = None
) -> None:
    """Connect (and subscribe), returning once CONNACK (and SUBACK) arrived; raise on refusal or timeout."""
    ready = threading.Event()
    problem: list[str] = []

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        if reason.is_failure:
            problem.append(f"CONNECT refused: {reason}")
            ready.set()
        elif not subscribe:
            ready.set()
        else:
            c.subscribe(subscribe)

    def on_subscribe(_c: mqtt.Client, _u: object, _m: int, codes: list[mqtt.ReasonCode], _p: object) -> None:
        if any(code.is_failure for code in codes):
            problem.append(f"SUBSCRIBE {subscribe} refused: {codes}")
        ready.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not ready.wait(CONNECT_TIMEOUT):
        raise RuntimeError(f"no CONNACK/SUBACK from {host}:{port} within {CONNECT_TIMEOUT}s")
    if problem:
        raise RuntimeError(problem[0])


class Pair:
    """One publisher and one subscriber connected to a target at one QoS, reused for warm-up and runs."""

    def __init__(self, target: Target, qos: int, window: int, tag: str) -> None:
        self.target = target
        self.qos = qos
        self.window = window
        host, port = target.server.mqtt_addr
        self.pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{tag}")
        self.sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{tag}")
        self.pub.max_inflight_messages_set(window)  # paho holds back nothing our own window lets through
        self.sub.on_message = self._on_message
        self.pub.on_publish = self._on_publish
        self._lock = threading.Lock()
        self._reset("none", 0)
        try:
            topics = [(target.sub_topic, qos)]
            if target.error_topic:
                topics.append((target.error_topic, qos))
            _connect(self.sub, host, port, subscribe=topics)
            _connect(self.pub, host, port)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for client in (self.pub, self.sub):
            with contextlib.suppress(Exception):
                client.disconnect()
            client.loop_stop()

    def _reset(self, run: str, count: int) -> None:
        with self._lock:
            self._run = run
            self._count = count
            self._sent_ns = [0] * count
            self._recv_ns = [0] * count
            self._received = 0
            self._duplicates = 0
            self._refused = 0
            self._first_refusal: str | None = None
            self._done = threading.Event()
            self._e2e_slots = threading.Semaphore(self.window)
            self._ack_slots = threading.Semaphore(self.window)
            self._send_by_mid: defaultdict[int, list[int]] = defaultdict(list)
            self._ack_by_mid: defaultdict[int, list[int]] = defaultdict(list)
        if count == 0:
            self._done.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter_ns()
        if msg.topic == self.target.error_topic:
            self._on_refusal(msg.payload)
            return
        try:
            _, run, seq_text, _sent = self.target.decode(msg.payload).split(" ", 3)
            seq = int(seq_text)
        except (ValueError, KeyError, UnicodeDecodeError):
            return  # not ours (e.g. a stale message from an earlier run); ignored
        with self._lock:
            if run != self._run or not 0 <= seq < self._count:
                return
            if self._recv_ns[seq]:
                self._duplicates += 1
                return
            self._recv_ns[seq] = now
            self._received += 1
            if self._received + self._refused >= self._count:
                self._done.set()
        self._e2e_slots.release()

    def _on_refusal(self, payload: bytes) -> None:
        """A refused push never arrives: count it and free its window slot so the run goes on. The error
        payload does not say which push it answers, so it is counted, not matched to a sequence number."""
        with self._lock:
            if self._count == 0:
                return
            self._refused += 1
            if self._first_refusal is None:
                self._first_refusal = payload.decode(errors="replace")[:200]
            if self._received + self._refused >= self._count:
                self._done.set()
        self._e2e_slots.release()

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, _rc: mqtt.ReasonCode, _p: object) -> None:
        if self.qos == 1:  # QoS 0 "publishes" when written to the socket; there is no acknowledgement
            self._ack_by_mid[mid].append(time.perf_counter_ns())
            self._ack_slots.release()

    def run(self, run: str, count: int, timeout: float, rate: float | None = None) -> Result:
        """Send ``count`` messages (paced at ``rate``/s when given) and wait for them at the subscriber."""
        self._reset(run, count)
        deadline = time.monotonic() + timeout
        interval_ns = int(1e9 / rate) if rate else 0
        server_cpu0, client_cpu0 = cpu_seconds(self.target.server.proc.pid), cpu_seconds()
        machine0 = machine_busy_seconds()
        start_ns = time.perf_counter_ns()
        sent = 0
        timed_out = False
        for seq in range(count):
            if not self._acquire(self._e2e_slots, deadline) or (
                self.qos == 1 and not self._acquire(self._ack_slots, deadline)
            ):
                timed_out = True
                break
            if interval_ns:
                delay = start_ns + seq * interval_ns - time.perf_counter_ns()
                if delay > 0:
                    time.sleep(delay / 1e9)  # pacing, not synchronisation
            now = time.perf_counter_ns()
            self._sent_ns[seq] = now
            info = self.pub.publish(self.target.push_topic, f"bench {run} {seq} {now}", self.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")
            self._send_by_mid[info.mid].append(now)
            sent += 1
        if not self._done.wait(max(0.0, deadline - time.monotonic())):
            timed_out = True
        end_ns = time.perf_counter_ns()
        if self.qos == 1:  # every PUBACK back (all window slots free again), for the PUBACK figures
            for _ in range(self.window):
                if not self._acquire(self._ack_slots, deadline):
                    timed_out = True
                    break
        with self._lock:
            received = [(s, r) for s, r in zip(self._sent_ns, self._recv_ns, strict=True) if r]
            duplicates = self._duplicates
            refused, first_refusal = self._refused, self._first_refusal
        last_ns = max((r for _, r in received), default=end_ns)
        wall = (end_ns - start_ns) / 1e9
        server_cpu = cpu_seconds(self.target.server.proc.pid) - server_cpu0
        client_cpu = cpu_seconds() - client_cpu0
        other_cpu = machine_busy_seconds() - machine0 - server_cpu - client_cpu
        puback = None
        if self.qos == 1:
            pairs = [
                a - s
                for mid, sends in list(self._send_by_mid.items())
                for s, a in zip(sends, self._ack_by_mid.get(mid, []), strict=False)
            ]
            puback = summarize(pairs)
        return Result(
            target=self.target.name,
            qos=self.qos,
            mode="paced" if rate else "burst",
            sent=sent,
            received=len(received),
            duplicates=duplicates,
            refused=refused,
            first_refusal=first_refusal,
            elapsed=(last_ns - start_ns) / 1e9,
            latency=summarize([r - s for s, r in received]),
            puback=puback,
            wall=wall,
            server_cpu=server_cpu,
            client_cpu=client_cpu,
            other_cpu=other_cpu,
            timed_out=timed_out,
        )

    @staticmethod
    def _acquire(slots: threading.Semaphore, deadline: float) -> bool:
        return slots.acquire(timeout=max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def target(name: str, args: argparse.Namespace) -> Iterator[Target]:
    """The server ``name`` started for this run, with its topics (also used by ``relay.py``)."""
    if name == "pushgate":
        with run_pushgate(
            topic="bench", synchronous=args.synchronous, code_dir=args.code, rate_limits=args.rate_limits
        ) as server:
            yield Target(
                name,
                server,
                "pushgate/bench/push",
                "pushgate/bench/message",
                _envelope_text,
                "pushgate/bench/error",
            )
    elif name == "amqtt":
        with run_amqtt() as server:
            yield Target(name, server, "bench/x", "bench/x", _raw_text)
    elif name == "mosquitto":
        with run_mosquitto() as server:
            yield Target(name, server, "bench/x", "bench/x", _raw_text)
    else:
        raise ValueError(name)


def measure(target: Target, args: argparse.Namespace) -> list[Result]:
    """Warm-up, burst and paced rows at each QoS of ``args`` (also used by ``relay.py``)."""
    results: list[Result] = []
    for qos in args.qos:
        pair = Pair(target, qos, args.window, tag=f"{target.name}-q{qos}")
        try:
            if args.warmup:
                pair.run("warmup", args.warmup, args.timeout)
            results.append(pair.run("burst", args.count, args.timeout))
            if args.rate > 0 and args.paced_count > 0:
                results.append(pair.run("paced", args.paced_count, args.timeout, rate=args.rate))
        finally:
            pair.close()
    return results


def print_results(results: list[Result], args: argparse.Namespace) -> None:
    print()
    paced = f"{args.paced_count} msgs at {args.rate:g}/s" if args.rate > 0 and args.paced_count > 0 else "off"
    print(
        f"MQTT push -> subscriber on 127.0.0.1; burst: {args.count} msgs, paced: {paced}; "
        f"warm-up {args.warmup} msgs (not counted)"
    )
    print(
        f"window: <= {args.window} sent-but-not-received; QoS 1 also <= {args.window} unacknowledged "
        f"PUBLISHes (paho max_inflight_messages_set({args.window})), not one PUBACK at a time"
    )
    print(
        f"pushgate code: {code_version(args.code)}; {os.cpu_count()} CPUs; Python {platform.python_version()}"
    )
    if "pushgate" in args.targets:
        sync = args.synchronous or "FULL (default)"
        limits = "on" if args.rate_limits else "off"
        print(
            f"pushgate: PUBACK after SQLite commit, synchronous={sync}; subscriber gets the JSON envelope; "
            f"push rate limits {limits}"
        )
    header = (
        f"{'mode':<6}{'qos':>3}  {'target':<10}{'sent':>6}{'recv':>6}{'dup':>4}{'ref':>5}{'msg/s':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'puback p50/p99':>16}{'srv cpu':>8}{'srv ms/msg':>11}"
        f"{'cli cpu':>8}{'oth cpu':>8}"
    )
    print(header)
    print("-" * len(header))
    order = {name: i for i, name in enumerate(args.targets)}
    refusals: list[str] = []
    rows = sorted(results, key=lambda r: (r.mode != "burst", r.qos, order[r.target]))
    for r in rows:
        puback = f"{r.puback.p50:.2f}/{r.puback.p99:.2f}" if r.puback and r.puback.count else "-"
        flag = "  TIMED OUT" if r.timed_out else ""
        if r.first_refusal:
            refusals.append(f"{r.mode} QoS {r.qos} {r.target}: {r.refused} refused, first: {r.first_refusal}")
        print(
            f"{r.mode:<6}{r.qos:>3}  {r.target:<10}{r.sent:>6}{r.received:>6}{r.duplicates:>4}{r.refused:>5}"
            f"{r.rate:>7.0f}"
            f"{r.latency.p50:>9.2f}{r.latency.p99:>9.2f}{r.latency.max:>9.2f}{puback:>16}"
            f"{r.server_cpu / r.wall:>8.0%}{1000 * r.server_cpu / max(r.received, 1):>11.2f}"
            f"{r.client_cpu / r.wall:>8.0%}{max(0.0, r.other_cpu) / r.wall:>8.0%}{flag}"
        )
    print(
        "ref: pushes refused on pushgate/bench/error. puback: PUBLISH -> PUBACK ms (QoS 1).\n"
        "srv/cli cpu: CPU time of the server / of this harness over the run's wall time (100% = one core); "
        "srv ms/msg: server CPU per message received;\noth cpu: the rest of the machine meanwhile "
        "(should be ~0%: else another process competed for the cores)"
    )
    for line in refusals:
        print(f"REFUSED: {line}")
    warn_if_busy([r.other_cpu / r.wall for r in results])


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000, help="messages per burst run (default 2000)")
    parser.add_argument("--window", type=int, default=50, help="messages in flight, see above (default 50)")
    parser.add_argument("--qos", type=int, nargs="+", choices=(0, 1), default=[0, 1])
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=("pushgate", "amqtt", "mosquitto"),
        default=["pushgate", "amqtt"],
        help="servers to measure, one after the other (default: pushgate amqtt); mosquitto (C) shows "
        "the harness's own ceiling",
    )
    parser.add_argument("--rate", type=float, default=25.0, help="paced mode send rate, msgs/s (0: off)")
    parser.add_argument("--paced-count", type=int, default=150, help="messages per paced run (default 150)")
    parser.add_argument("--warmup", type=int, default=200, help="messages sent first and not counted")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per run (default 60)")
    add_server_arguments(parser)
    args = parse_server_arguments(parser, argv)
    if args.count < 1 or args.window < 1:
        parser.error("--count and --window must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)

    results: list[Result] = []
    for name in args.targets:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        with target(name, args) as server_target:
            results.extend(measure(server_target, args))
    print_results(results, args)
    return 1 if any(r.timed_out or r.refused for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
