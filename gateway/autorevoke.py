"""Automatic revocation of an API key that keeps exceeding its rate limit (``[ratelimit] auto_revoke``).

PushStaq revokes a channel key whose webhook "exceeds rate limit and is detected as spam"; pushgate does the
same when configured to (it is off by default). Each refusal of a key's push because the key's own bucket
is empty (``RateLimiter.on_key_refused``; a refusal for the client address's bucket does not count, since
an address may be shared) is a strike. ``auto_revoke_strikes`` strikes within ``auto_revoke_window``
seconds revoke the key through ``Admin.revoke_key``, exactly as a revocation through the API: the key fails
at its next use and its MQTT clients are disconnected at once. The revocation is also

- logged at WARNING with the key's id and label, never its secret;
- posted to the key's topic as a notice (title "API key revoked", source ``pushgate``) through the one
  publish pipeline, so hubs and phones see it like any other message;
- sent to the topic owner's webhooks that want ``key_revoked`` (or ``all``), queued in the transaction
  that revokes the key and attached to the notice message (outbox rows belong to a message).

Strikes are counted in memory, per process: a restart forgets them, which only delays a revocation.
Memory is bounded: a key holds at most ``auto_revoke_strikes`` times, and keys whose last strike left the
window are forgotten, a few at each strike. The clock is a parameter so tests need not wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from gateway.access import SYSTEM, Principal
from gateway.admin import Admin
from gateway.config import RateLimitConfig
from gateway.envelope import iso
from gateway.errors import ConfigError
from gateway.outbox import Outbox, event_job
from gateway.request import PushRequest, PushResult
from gateway.storage.models import ApiKey, Delivery, Message, Topic, utcnow
from gateway.webhooks import Webhooks

__all__ = ["EVENT", "AutoRevoker"]

log = logging.getLogger(__name__)

EVENT = "key_revoked"

Publish = Callable[[PushRequest, Principal], Awaitable[PushResult]]


class AutoRevoker:
    def __init__(
        self,
        config: RateLimitConfig,
        *,
        sessions: async_sessionmaker[Any],
        admin: Admin,
        publish: Publish,
        webhooks: Webhooks,
        outbox: Outbox,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.auto_revoke_strikes < 1:
            raise ConfigError(
                f"[ratelimit] auto_revoke_strikes must be at least 1, got {config.auto_revoke_strikes}"
            )
        if not config.auto_revoke_window > 0:
            raise ConfigError(
                f"[ratelimit] auto_revoke_window must be above 0, got {config.auto_revoke_window}"
            )
        self.strikes = config.auto_revoke_strikes
        self.window = config.auto_revoke_window
        self._sessions = sessions
        self._admin = admin
        self._publish = publish
        self._webhooks = webhooks
        self._outbox = outbox
        self._clock = clock
        # key id -> times of its recent strikes; least recently struck first.
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()
        self._revoking: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Keys with strikes in memory."""
        return len(self._recent)

    def strike(self, principal: Principal) -> None:
        """Count one refusal of ``principal``'s push (a key); the last strike of too many revokes it."""
        key_id = principal.key_id
        if principal.kind != "key" or not key_id or key_id in self._revoking:
            return
        now = self._clock()
        self._forget(now)
        times = self._recent.pop(key_id, None) or deque(maxlen=self.strikes)
        times.append(now)
        if len(times) == self.strikes and now - times[0] <= self.window:
            self._revoking.add(key_id)
            task = asyncio.get_running_loop().create_task(self._revoke(key_id), name=f"auto-revoke-{key_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._recent[key_id] = times

    async def close(self) -> None:
        """Stop revocations in progress (at shutdown): the key keeps its state, strikes are forgotten."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def idle(self) -> None:
        """Wait until every revocation started so far is done (tests; a clean shutdown)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def _forget(self, now: float) -> None:
        while self._recent:
            key_id, times = next(iter(self._recent.items()))
            if now - times[-1] <= self.window:
                return
            del self._recent[key_id]

    async def _revoke(self, key_id: str) -> None:
        try:
            async with self._sessions() as session:
                row = (
                    await session.execute(
                        select(ApiKey, Topic)
                        .join(Topic, Topic.id == ApiKey.topic_id)
                        .where(ApiKey.id == key_id)
                    )
                ).first()
            if row is None or row[0].revoked_at is not None:
                return  # deleted or revoked meanwhile: nothing to announce
            key, topic = row
            label = key.label or key.id[:8]
            notice = await self._publish(
                PushRequest(
                    topic=topic.name,
                    title="API key revoked",
                    message=(
                        f'The API key "{label}" was revoked: it exceeded its rate limit {self.strikes} times '
                        f"within {self.window:g} s. Create a new key for this topic and give it to the "
                        "devices and services that used the old one."
                    ),
                    priority="high",
                    source="pushgate",
                ),
                SYSTEM,
            )
            rows: list[Delivery] = []

            async def announce(session: Any, revoked: ApiKey) -> None:
                message = await session.get(Message, notice.id)
                current = await session.get(Topic, revoked.topic_id)
                if message is None or current is None:
                    return  # the topic was deleted meanwhile: no one to tell
                event = {
                    "event": EVENT,
                    "key_id": revoked.id,
                    "label": revoked.label,
                    "topic": current.name,
                    "topic_id": current.id,
                    "reason": "rate_limit",
                    "strikes": self.strikes,
                    "window_seconds": self.window,
                    "revoked_at": iso(revoked.revoked_at) if revoked.revoked_at else None,
                    "message_id": message.id,
                }
                now = revoked.revoked_at or utcnow()
                rows.extend(await self._webhooks.queue(session, message, current, now, EVENT, event))

            await self._admin.revoke_key(key_id, also=announce)
            self._outbox.submit([event_job(d, topic.name) for d in rows])
            log.warning(
                "API key %s (%s) of topic %s revoked automatically: %d rate-limit refusals within %g s",
                key_id,
                label,
                topic.name,
                self.strikes,
                self.window,
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("automatic revocation of API key %s failed; it stays valid", key_id)
        finally:
            self._revoking.discard(key_id)
