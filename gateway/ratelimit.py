"""Rate limits on pushes: token buckets per credential and per client address, from ``[ratelimit]``.

Every push takes one token from up to two buckets, and must find a token in both:

- the credential's bucket (``key_burst``, ``key_per_second``): one per API key (by key id), one per user
  for user tokens (by user id, so all of a user's tokens share it); anonymous pushes have none;
- the client address's bucket (``address_burst``, ``address_per_second``): one per address, for every
  caller, keyed or not. IPv6 clients are counted per network (``address_ipv6_prefix``, a /64 by default),
  because one host holds a whole /64. Pushes made in-process (no address) have none.

A bucket holds at most its burst and refills continuously at its rate. A refused push takes nothing from
either bucket, so retrying is never punished beyond the wait itself.

The answer reports one bucket, following Pushary's documented headers (``api-docs/pushary.txt``):

- ``X-RateLimit-Limit``: the bucket's capacity, i.e. its burst: pushes that may be sent at once when it
  is full.
- ``X-RateLimit-Remaining``: whole pushes left in the bucket right now, after this one.
- ``X-RateLimit-Reset``: the Unix time in whole seconds (rounded up) at which the bucket is full again
  (Remaining equals Limit) if nothing more is sent. Pushary's example ``1704067200`` is such a timestamp.
- ``Retry-After`` (on ``429`` only): whole seconds, rounded up and at least 1, until the next push is
  accepted.

On success the reported bucket is the tighter of the two (fewer pushes remaining; on a tie the one that
refills later). On refusal it is the refusing one (if both refuse, the one that frees a token later).

Memory is bounded. Dropping a full bucket changes nothing (a missing bucket is a full one), so each table
forgets its least recently used buckets as soon as they are full again, a little at each push (no timer,
no task). Each table also holds at most ``max_buckets``; beyond that the least recently used bucket is
evicted even if not full, counted in ``evicted`` and logged. Eviction fails open (that client starts
again from a full bucket) rather than refusing clients nobody has seen, so a flood of new addresses cannot
lock out the house.

The clock is injected: ``clock`` gives monotonic seconds for the arithmetic, ``wall_clock`` Unix seconds
for ``X-RateLimit-Reset``; tests pass both in instead of sleeping.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway.access import Principal
from gateway.config import RateLimitConfig
from gateway.errors import ConfigError, RateLimited

__all__ = ["BucketTable", "RateLimiter", "RateState"]

log = logging.getLogger(__name__)

Scope = Literal["key", "user", "address"]

# Float refills (0.1 s * 10/s) may land a hair below a whole token; this much counts as whole.
_EPSILON = 1e-9

_WHO = {"key": "this API key", "user": "this user's tokens", "address": "this address"}


@dataclass(frozen=True, slots=True)
class RateState:
    """One bucket as the answer reports it (see the module docstring for each field's meaning)."""

    scope: Scope
    limit: int  # the burst: X-RateLimit-Limit
    remaining: int  # whole tokens left: X-RateLimit-Remaining
    reset: int  # Unix seconds when full again: X-RateLimit-Reset
    retry_after: int  # seconds until a token is free; 0 when the push was accepted


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class BucketTable:
    """The buckets of one kind (same burst and rate), least recently used first."""

    def __init__(self, name: str, burst: int, per_second: float, max_buckets: int) -> None:
        self.name = name
        self.burst = burst
        self.per_second = per_second
        self.max_buckets = max_buckets
        self.evicted = 0  # buckets forgotten before they were full, because the table was at max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def level(self, key: str, now: float) -> float:
        """Tokens in ``key``'s bucket at ``now``, refilled; an unknown bucket is full."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(self.burst)
        return min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second)

    def take(self, key: str, level: float, now: float) -> None:
        """Store ``level - 1`` tokens for ``key`` at ``now`` (``level`` from ``level()`` just before)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._sweep(now)
            if len(self._buckets) >= self.max_buckets:
                self._buckets.popitem(last=False)
                self.evicted += 1
                if self.evicted == 1 or self.evicted % 1000 == 0:
                    log.warning(
                        "rate limit: %d %s buckets evicted before refilling; raise [ratelimit] max_buckets "
                        "if this is not a flood of clients",
                        self.evicted,
                        self.name,
                    )
            self._buckets[key] = _Bucket(level - 1, now)
        else:
            bucket.tokens, bucket.updated = level - 1, now
            self._buckets.move_to_end(key)
            self._sweep(now)

    def seconds_until(self, tokens: float, level: float) -> float:
        """Seconds until a bucket at ``level`` holds ``tokens``."""
        return max(0.0, tokens - level) / self.per_second

    def _sweep(self, now: float) -> None:
        """Forget least recently used buckets that are full again (amortised: O(1) per push)."""
        buckets = self._buckets
        while buckets:
            key, oldest = next(iter(buckets.items()))
            if oldest.tokens + (now - oldest.updated) * self.per_second < self.burst:
                return
            del buckets[key]


class RateLimiter:
    """Both tables and the decision; ``acquire`` is plain arithmetic, safe to call on the event loop."""

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        _check(config)
        self.enabled = config.enabled
        self._ipv6_prefix = config.address_ipv6_prefix
        self._clock = clock
        self._wall_clock = wall_clock
        self.keys = BucketTable("credential", config.key_burst, config.key_per_second, config.max_buckets)
        self.addresses = BucketTable(
            "address", config.address_burst, config.address_per_second, config.max_buckets
        )
        self._key_refused: list[Callable[[Principal], None]] = []

    def on_key_refused(self, listener: Callable[[Principal], None]) -> None:
        """Call ``listener(principal)`` whenever a key's push is refused because the key's own bucket is
        empty (not its address's): ``gateway.autorevoke`` counts these."""
        self._key_refused.append(listener)

    def acquire(self, principal: Principal, client_addr: str | None) -> RateState | None:
        """Take a token for one push, or raise ``RateLimited``; ``None`` when no limit applies."""
        if not self.enabled:
            return None
        probes: list[tuple[Scope, BucketTable, str]] = []
        if principal.kind == "key" and principal.key_id:
            probes.append(("key", self.keys, f"key:{principal.key_id}"))
        elif principal.kind == "user" and principal.user_id:
            probes.append(("user", self.keys, f"user:{principal.user_id}"))
        if client_addr:
            probes.append(("address", self.addresses, self._address_key(client_addr)))
        if not probes:
            return None

        now = self._clock()
        levels = [table.level(key, now) for _, table, key in probes]
        refused = [
            (table.seconds_until(1.0, level), scope, table, level)
            for (scope, table, _), level in zip(probes, levels, strict=True)
            if level + _EPSILON < 1.0
        ]
        if refused:
            if any(r[1] == "key" for r in refused):
                for listener in self._key_refused:
                    listener(principal)
            wait, scope, table, level = max(refused, key=lambda r: r[0])
            state = self._state(scope, table, level, max(1, math.ceil(wait)))
            raise RateLimited(
                f"too many pushes from {_WHO[scope]}: retry after {state.retry_after} s (the limit is "
                f"{table.burst} at once, then {table.per_second:g} per second)",
                rate=state,
            )

        states = []
        for (scope, table, key), level in zip(probes, levels, strict=True):
            table.take(key, level, now)
            states.append(self._state(scope, table, level - 1, 0))
        return min(states, key=lambda s: (s.remaining, -s.reset))

    @property
    def tracked(self) -> int:
        """Buckets held in memory, both kinds."""
        return len(self.keys) + len(self.addresses)

    def _state(self, scope: Scope, table: BucketTable, level: float, retry_after: int) -> RateState:
        until_full = table.seconds_until(table.burst, level)
        return RateState(
            scope=scope,
            limit=table.burst,
            remaining=max(0, math.floor(level + _EPSILON)),
            reset=math.ceil(self._wall_clock() + until_full),
            retry_after=retry_after,
        )

    def _address_key(self, client_addr: str) -> str:
        """The address itself; an IPv6 address's network; an IPv4-mapped IPv6 address as IPv4."""
        try:
            address = ipaddress.ip_address(client_addr)
        except ValueError:
            return client_addr  # not an IP (a Unix socket, a name): counted as given
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            return str(ipaddress.IPv6Network((address, self._ipv6_prefix), strict=False))
        return str(address)


def _check(config: RateLimitConfig) -> None:
    """Refuse limits that would refuse every push or mean nothing, naming the key."""
    for name in ("key_burst", "address_burst", "max_buckets"):
        if getattr(config, name) < 1:
            raise ConfigError(f"[ratelimit] {name} must be at least 1, got {getattr(config, name)}")
    for name in ("key_per_second", "address_per_second"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"[ratelimit] {name} must be above 0, got {getattr(config, name)}")
    if not 0 <= config.address_ipv6_prefix <= 128:
        raise ConfigError(f"[ratelimit] address_ipv6_prefix must be 0-128, got {config.address_ipv6_prefix}")
