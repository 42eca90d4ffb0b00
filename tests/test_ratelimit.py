"""Rate limits on pushes: the buckets alone with a clock passed in, then through the real server over HTTP
and MQTT with small limits."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import httpx
import pytest

from gateway.access import ANONYMOUS, Principal
from gateway.admin import Admin
from gateway.config import Config, RateLimitConfig
from gateway.errors import ConfigError, RateLimited
from gateway.ratelimit import RateLimiter, RateState
from tests.conftest import TIMEOUT, MqttClient, Server, stored_messages

WALL = 1_700_000_000.0  # the wall clock's Unix time when the fake monotonic clock reads 0

KEY_A = Principal("key", topic_id="t1", key_id="key-a", label="a")
KEY_B = Principal("key", topic_id="t2", key_id="key-b", label="b")
ALICE = Principal("user", user_id="alice", label="alice")


class Clock:
    """Monotonic seconds that only move when the test says so, and the matching wall clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL + self.now


def limiter(clock: Clock, **limits: object) -> RateLimiter:
    defaults: dict[str, object] = dict(
        key_burst=3, key_per_second=1.0, address_burst=100, address_per_second=100.0
    )
    config = RateLimitConfig(**(defaults | limits))  # type: ignore[arg-type]
    return RateLimiter(config, clock=clock.monotonic, wall_clock=clock.wall)


def refused(rl: RateLimiter, principal: Principal, addr: str | None = "10.0.0.1") -> RateState:
    with pytest.raises(RateLimited) as info:
        rl.acquire(principal, addr)
    assert info.value.status == 429
    assert info.value.to_dict() == {"error": "Rate limit exceeded", "message": info.value.message}
    return info.value.rate


# -- the buckets, with the clock passed in -----------------------------------------------------------


def test_burst_then_refusal_then_one_token_per_interval() -> None:
    clock = Clock()
    rl = limiter(clock)
    states = [rl.acquire(KEY_A, "10.0.0.1") for _ in range(3)]
    assert [(s.scope, s.limit, s.remaining, s.retry_after) for s in states if s] == [
        ("key", 3, 2, 0),
        ("key", 3, 1, 0),
        ("key", 3, 0, 0),
    ]
    # Reset: the Unix second at which the bucket is full again (3 tokens at 1/s from empty)
    assert states[-1] and states[-1].reset == WALL + 3

    assert refused(rl, KEY_A) == RateState("key", limit=3, remaining=0, reset=int(WALL) + 3, retry_after=1)

    clock.now = 0.5  # half a token: still refused; Retry-After rounds up and is never 0
    assert refused(rl, KEY_A).retry_after == 1
    clock.now = 1.0  # one token back
    state = rl.acquire(KEY_A, "10.0.0.1")
    assert state and state.remaining == 0 and state.reset == WALL + 1.0 + 3
    assert refused(rl, KEY_A).retry_after == 1


def test_reset_and_retry_after_round_up_to_whole_seconds() -> None:
    clock = Clock()
    rl = limiter(clock, key_burst=2, key_per_second=0.25)  # one token every 4 s
    clock.now = 0.2
    rl.acquire(KEY_A, None)
    state = rl.acquire(KEY_A, None)
    assert state and state.reset == WALL + 9  # full at 0.2 + 8 s: Unix second 8.2 rounds up to 9
    assert refused(rl, KEY_A, None).retry_after == 4
    clock.now = 3.3
    assert refused(rl, KEY_A, None).retry_after == 1  # 0.9 s to go


def test_the_limit_recovers_after_its_window_and_the_full_bucket_is_forgotten() -> None:
    clock = Clock()
    rl = limiter(clock)
    for _ in range(3):
        rl.acquire(KEY_A, None)
    refused(rl, KEY_A, None)
    assert rl.tracked == 1

    clock.now = 3.0  # burst / rate: full again
    states = [rl.acquire(KEY_A, None) for _ in range(3)]
    assert [s.remaining for s in states if s] == [2, 1, 0]
    refused(rl, KEY_A, None)

    clock.now = 6.0
    rl.acquire(KEY_B, None)  # any push sweeps buckets that are full again
    assert rl.tracked == 1, "KEY_A's bucket is full again, so it is no longer held"


def test_two_keys_are_independent_and_a_user_is_one_bucket() -> None:
    clock = Clock()
    rl = limiter(clock)
    for _ in range(3):
        rl.acquire(KEY_A, None)
    refused(rl, KEY_A, None)
    assert [rl.acquire(KEY_B, None).remaining for _ in range(3)] == [2, 1, 0]  # type: ignore[union-attr]
    refused(rl, KEY_B, None)
    # a user's tokens all map to the user's id: one bucket, separate from the keys'
    other_token_of_alice = Principal("user", user_id="alice", label="alice (phone)")
    rl.acquire(ALICE, None)
    rl.acquire(other_token_of_alice, None)
    rl.acquire(ALICE, None)
    assert refused(rl, other_token_of_alice, None).scope == "user"


def test_the_address_limit_is_separate_from_the_key_limit() -> None:
    clock = Clock()
    rl = limiter(clock, key_burst=3, address_burst=4, address_per_second=1.0)
    for _ in range(3):
        rl.acquire(KEY_A, "10.0.0.1")
    assert refused(rl, KEY_A, "10.0.0.1").scope == "key"
    # the refused push took nothing from the address: KEY_B gets the address's fourth token
    state = rl.acquire(KEY_B, "10.0.0.1")
    assert state and (state.scope, state.remaining) == ("address", 0)  # the tighter bucket is reported
    assert refused(rl, KEY_B, "10.0.0.1").scope == "address"
    assert refused(rl, ANONYMOUS, "10.0.0.1").scope == "address"
    # KEY_B is fine from another address; anonymous clients elsewhere have their own bucket
    assert rl.acquire(KEY_B, "10.0.0.2")
    assert rl.acquire(ANONYMOUS, "10.0.0.3")


def test_when_both_refuse_the_later_one_is_reported() -> None:
    clock = Clock()
    rl = limiter(clock, key_burst=1, key_per_second=1.0, address_burst=1, address_per_second=0.1)
    rl.acquire(KEY_A, "10.0.0.1")
    rate = refused(rl, KEY_A, "10.0.0.1")
    assert (rate.scope, rate.retry_after, rate.reset) == ("address", 10, WALL + 10)


def test_the_tighter_bucket_is_reported_on_success() -> None:
    clock = Clock()
    rl = limiter(clock, key_burst=10, address_burst=5)
    state = rl.acquire(KEY_A, "10.0.0.1")
    assert state and (state.scope, state.limit, state.remaining) == ("address", 5, 4)
    rl = limiter(clock, key_burst=5, address_burst=10)
    state = rl.acquire(KEY_A, "10.0.0.1")
    assert state and (state.scope, state.limit, state.remaining) == ("key", 5, 4)


def test_memory_is_bounded_by_max_buckets_with_counted_eviction() -> None:
    clock = Clock()
    rl = limiter(clock, address_burst=2, address_per_second=0.001, max_buckets=3)
    for i in range(5):
        rl.acquire(ANONYMOUS, f"10.0.0.{i}")
        rl.acquire(ANONYMOUS, f"10.0.0.{i}")
    assert len(rl.addresses) == 3 and rl.addresses.evicted == 2
    refused(rl, ANONYMOUS, "10.0.0.4")  # the most recent are kept
    state = rl.acquire(ANONYMOUS, "10.0.0.0")  # the least recently used was evicted: it fails open
    assert state and state.remaining == 1
    assert len(rl.addresses) == 3 and rl.addresses.evicted == 3


def test_full_buckets_are_dropped_as_clients_come_and_go() -> None:
    clock = Clock()
    rl = limiter(clock, address_burst=10, address_per_second=10.0, max_buckets=1000)
    for second in range(100):
        clock.now = float(second)
        for client in range(20):  # 20 new clients each second, each refilled within a second
            rl.acquire(ANONYMOUS, f"10.{second}.0.{client}")
        assert len(rl.addresses) <= 40
    assert rl.addresses.evicted == 0


def test_ipv6_clients_are_counted_per_network() -> None:
    clock = Clock()
    rl = limiter(clock, address_burst=2, address_per_second=0.001)
    rl.acquire(ANONYMOUS, "2001:db8:1:2::1")
    rl.acquire(ANONYMOUS, "2001:db8:1:2:ffff::9")  # the same /64
    assert refused(rl, ANONYMOUS, "2001:db8:1:2::abcd").scope == "address"
    assert rl.acquire(ANONYMOUS, "2001:db8:1:3::1")  # another /64
    rl.acquire(ANONYMOUS, "192.0.2.7")
    rl.acquire(ANONYMOUS, "::ffff:192.0.2.7")  # IPv4-mapped: the same IPv4 client
    refused(rl, ANONYMOUS, "192.0.2.7")


def test_no_limit_applies_when_disabled_or_in_process() -> None:
    clock = Clock()
    rl = limiter(clock, enabled=False, key_burst=1, address_burst=1)
    assert all(rl.acquire(KEY_A, "10.0.0.1") is None for _ in range(10))
    rl = limiter(clock, key_burst=1, address_burst=1)
    assert all(rl.acquire(ANONYMOUS, None) is None for _ in range(10))  # no credential, no address
    assert rl.tracked == 0


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"key_burst": 0}, "[ratelimit] key_burst must be at least 1"),
        ({"address_per_second": 0.0}, "[ratelimit] address_per_second must be above 0"),
        ({"max_buckets": 0}, "[ratelimit] max_buckets must be at least 1"),
        ({"address_ipv6_prefix": 129}, "[ratelimit] address_ipv6_prefix must be 0-128"),
    ],
)
def test_nonsense_limits_are_refused_at_start(limits: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        limiter(Clock(), **limits)
    assert message in info.value.message


# -- through the real server ---------------------------------------------------------------------

# One token per 100 s: within a test nothing refills, so the counts are exact.
KEY_LIMITED = RateLimitConfig(key_burst=3, key_per_second=0.01, address_burst=100, address_per_second=100.0)
ADDRESS_LIMITED = RateLimitConfig(
    key_burst=100, key_per_second=100.0, address_burst=2, address_per_second=0.01
)
# Fast refill: the limit recovers within a fraction of a second.
FAST_REFILL = RateLimitConfig(key_burst=2, key_per_second=10.0, address_burst=100, address_per_second=100.0)


@pytest.fixture
def limits(request: pytest.FixtureRequest) -> RateLimitConfig:
    return getattr(request, "param", KEY_LIMITED)


@pytest.fixture
def config(config: Config, limits: RateLimitConfig) -> Config:
    return dataclasses.replace(config, ratelimit=limits)


def rate_headers(response: httpx.Response) -> dict[str, int]:
    names = ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"]
    return {name: int(response.headers[name]) for name in names if name in response.headers}


async def test_bursting_past_a_keys_limit_gets_429_with_the_headers_and_stores_nothing(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    await admin.create_topic("door", private=True)
    key = await admin.create_key("door", label="esp32")
    auth = {"Authorization": f"Bearer {key.secret}"}

    accepted = []
    for i in range(3):
        before = time.time()
        response = await http.post("/api/push/door", content=f"opened {i}", headers=auth)
        assert response.status_code == 200, response.text
        headers = rate_headers(response)
        assert "Retry-After" not in headers
        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == (3, 2 - i)
        # Unix time in seconds when the bucket is full again: (i + 1) tokens at 0.01/s
        full_in = (i + 1) / 0.01
        assert before + full_in - 1 <= headers["X-RateLimit-Reset"] <= time.time() + full_in + 1
        accepted.append(response.json()["id"])

    refused = await http.post("/api/push/door", content="opened 3", headers=auth)
    assert refused.status_code == 429
    body = refused.json()
    assert list(body) == ["error", "message"] and body["error"] == "Rate limit exceeded"
    assert "retry after" in body["message"]
    headers = rate_headers(refused)
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == (3, 0)
    assert 1 <= headers["Retry-After"] <= 100  # one token per 100 s
    assert headers["X-RateLimit-Reset"] >= time.time() + 300 - 2

    assert [m.id for m in await stored_messages(server.config)] == accepted


@pytest.mark.parametrize("limits", [FAST_REFILL], indirect=True)
async def test_the_limit_recovers_after_its_window(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    await admin.create_topic("door")
    key = await admin.create_key("door")
    auth = {"x-api-key": key.secret}

    async def push(text: str) -> httpx.Response:
        return await http.post("/api/push/door", content=text, headers=auth)

    burst = await asyncio.gather(*(push(f"burst {i}") for i in range(8)))
    statuses = [r.status_code for r in burst]
    assert set(statuses) == {200, 429} and statuses.count(200) < 8
    retry_after = max(int(r.headers["Retry-After"]) for r in burst if r.status_code == 429)
    assert retry_after == 1  # 0.1 s per token, rounded up

    deadline = time.monotonic() + TIMEOUT
    while (response := await push("after the wait")).status_code == 429:
        assert time.monotonic() < deadline, "the limit did not recover"
        await asyncio.sleep(0.02)
    assert response.status_code == 200

    # wait for X-RateLimit-Reset (Unix seconds): then the whole burst is available again
    reset = int(response.headers["X-RateLimit-Reset"])
    while time.time() < reset:
        assert time.monotonic() < deadline, "the reset time never came"
        await asyncio.sleep(0.02)
    again = [await push(f"again {i}") for i in range(2)]
    assert [r.status_code for r in again] == [200, 200]
    assert again[0].headers["X-RateLimit-Remaining"] == "1"

    stored = await stored_messages(server.config)
    assert len(stored) == statuses.count(200) + 3


@pytest.mark.parametrize("limits", [ADDRESS_LIMITED], indirect=True)
async def test_anonymous_clients_are_limited_by_address(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    await admin.create_topic("doorbell")
    for _ in range(2):
        response = await http.post("/api/push/doorbell", content="ding")
        assert response.status_code == 200
    assert rate_headers(response)["X-RateLimit-Remaining"] == 0
    refused = await http.post("/api/push/doorbell", content="ding")
    assert refused.status_code == 429
    assert rate_headers(refused)["X-RateLimit-Limit"] == 2
    # the address limit holds for every caller from that address, a key's too
    key = await admin.create_key("doorbell")
    keyed = await http.post("/api/push/doorbell", content="ding", headers={"x-api-key": key.secret})
    assert keyed.status_code == 429
    assert len(await stored_messages(server.config)) == 2


async def test_an_mqtt_push_past_the_limit_is_answered_on_the_error_topic(
    server: Server, admin: Admin, make_client
) -> None:
    await admin.create_topic("door", private=True)
    key = await admin.create_key("door", label="esp32")
    hub: MqttClient = await make_client(password=key.secret)
    assert await hub.subscribe("pushgate/door/error") == 1
    device: MqttClient = await make_client(username="esp32-hall", password=key.secret)

    for i in range(4):
        await device.publish("pushgate/door/push", f"opened {i}", qos=1)  # PUBACK: settled
    error = json.loads((await hub.receive()).payload)
    assert error["status"] == 429 and error["error"] == "Rate limit exceeded"
    assert set(error) == {"status", "error", "message"} and "retry after" in error["message"]
    assert [m.message for m in await stored_messages(server.config)] == [f"opened {i}" for i in range(3)]
