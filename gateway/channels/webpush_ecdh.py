"""Web Push key agreements in a helper process, so that a fan-out uses a second core.

Every Web Push request needs a fresh sender key pair and its ECDH secret with the browser's key (RFC 8291,
``gateway.channels.webpush_encrypt.agree``): two P-256 scalar multiplications, about 60 µs of CPU, as much
as the rest of the request together. ``KeyAgreements.agree`` has them made by a helper process
(``python -m gateway.channels.webpush_ecdh``), which the event loop waits for without working, so the
loop encrypts, sends and records while the helper multiplies.

The helper is a ``gateway.helper_process``: the gateway writes frames of receiver points, every point
asked for in one event-loop iteration in one frame (65 bytes per point); the helper answers each frame, in
order, with 97 bytes per point (the sender's point, then the 32-byte secret), or 97 zero bytes for a point
not on the curve. The key pairs are generated in the helper and only their public points leave it.

Nothing depends on the helper being there: until it has started, while it is started again after it
ended (not more often than every ``_RESTART_AFTER`` seconds), and for the points it had not answered when
it ended or stopped answering (``_STUCK``), the agreements are made in the gateway's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from gateway import helper_process
from gateway.channels.webpush_encrypt import POINT_SIZE, agree

__all__ = ["KeyAgreements"]

log = logging.getLogger(__name__)

_ANSWER = POINT_SIZE + 32  # the sender's point, then the secret
_REFUSED = bytes(_ANSWER)  # the answer for a point that is not on the curve
_RESTART_AFTER = 10.0  # seconds before a helper that ended is started again
_STUCK = 5.0  # seconds an unanswered frame may wait before the helper is given up
_CLOSE_WAIT = 5.0  # seconds the helper has to end after its input closed


class KeyAgreements:
    """The helper process and the agreements it has not answered yet, in the order they were asked."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._asked: list[tuple[bytes, asyncio.Future[tuple[bytes, bytes]]]] = []  # this iteration's
        self._sent: deque[tuple[float, list[tuple[bytes, asyncio.Future[tuple[bytes, bytes]]]]]] = deque()
        self._watch: asyncio.TimerHandle | None = None
        self._start_after = 0.0  # the loop's time before which no helper is started
        self._closed = False
        self.helped = 0  # agreements the helper made (for tests and the benchmark)

    @property
    def pid(self) -> int | None:
        """The helper's process id while it runs."""
        return None if self._process is None else self._process.pid

    async def agree(self, receiver_point: bytes) -> tuple[bytes, bytes]:
        """The sender's point and the ECDH secret for ``receiver_point`` (``webpush_encrypt.agree``)."""
        if len(receiver_point) != POINT_SIZE:
            return agree(receiver_point)  # raises the ValueError
        if self._process is None:
            self._start_soon()
            return agree(receiver_point)
        future: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()
        if not self._asked:
            asyncio.get_running_loop().call_soon(self._send)
        self._asked.append((receiver_point, future))
        return await future

    async def start(self) -> None:
        """Start the helper now and wait until it runs (``agree`` starts it in the background)."""
        self._start_soon()
        if self._starting is not None:
            await asyncio.shield(self._starting)

    def _start_soon(self) -> None:
        loop = asyncio.get_running_loop()
        if self._starting is None and not self._closed and loop.time() >= self._start_after:
            self._starting = loop.create_task(self._start(), name="webpush-ecdh-start")

    async def _start(self) -> None:
        try:
            process = await helper_process.start(__name__)
        except OSError as exc:
            log.warning("the Web Push key agreement helper cannot be started (%s); agreeing here", exc)
            self._start_after = asyncio.get_running_loop().time() + _RESTART_AFTER
            return
        finally:
            self._starting = None
        if self._closed:
            await helper_process.stop(process, _CLOSE_WAIT)
            return
        self._process = process
        self._reader = asyncio.create_task(self._read(process), name="webpush-ecdh-reader")

    def _send(self) -> None:
        """One frame for everything asked in this iteration (or here, if the helper is gone)."""
        asked, self._asked = self._asked, []
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            _agree_here(asked)
            return
        loop = asyncio.get_running_loop()
        self._sent.append((loop.time(), asked))
        process.stdin.write(helper_process.frame(b"".join(point for point, _ in asked)))
        if self._watch is None:
            self._watch = loop.call_later(_STUCK, self._check_stuck)

    def _check_stuck(self) -> None:
        """A helper that has left a frame unanswered for ``_STUCK`` seconds is ended (and replaced)."""
        self._watch = None
        if not self._sent or self._process is None:
            return
        loop = asyncio.get_running_loop()
        waited = loop.time() - self._sent[0][0]
        if waited >= _STUCK:
            log.warning("the Web Push key agreement helper did not answer for %.0fs; ending it", waited)
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        else:
            self._watch = loop.call_later(_STUCK - waited, self._check_stuck)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while True:
                answers = await helper_process.read_frame(process.stdout)
                _, asked = self._sent.popleft()
                if len(answers) != _ANSWER * len(asked):
                    raise ValueError(f"{len(answers)} bytes answered {len(asked)} points")
                for i, (_, future) in enumerate(asked):
                    answer = answers[i * _ANSWER : (i + 1) * _ANSWER]
                    if future.done():
                        continue  # its request was cancelled
                    if answer == _REFUSED:
                        future.set_exception(ValueError("the subscription's p256dh is not a P-256 point"))
                        future.exception()  # retrieved by its awaiter; nobody else need see it
                    else:
                        future.set_result((answer[:POINT_SIZE], answer[POINT_SIZE:]))
                self.helped += len(asked)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            if not self._closed:
                log.warning("the Web Push key agreement helper ended (%s); agreeing here meanwhile", exc)
        finally:
            self._process = None
            self._start_after = asyncio.get_running_loop().time() + _RESTART_AFTER
            while self._sent:
                _agree_here(self._sent.popleft()[1])
            await helper_process.stop(process, _CLOSE_WAIT)

    async def close(self) -> None:
        self._closed = True
        if self._starting is not None:
            await asyncio.shield(self._starting)
        process = self._process
        if process is not None:
            await helper_process.stop(process, _CLOSE_WAIT)
        if self._reader is not None:
            await self._reader
        if self._watch is not None:
            self._watch.cancel()


def _agree_here(asked: list[tuple[bytes, asyncio.Future[tuple[bytes, bytes]]]]) -> None:
    for point, future in asked:
        if future.done():
            continue
        try:
            future.set_result(agree(point))
        except ValueError as exc:
            future.set_exception(exc)
            future.exception()


def _answer(points: bytes) -> bytes | None:
    """The helper's answer to a frame of points (``None`` ends it: the frame is not made of points)."""
    if len(points) % POINT_SIZE:
        return None
    answers = bytearray()
    for i in range(0, len(points), POINT_SIZE):
        try:
            sender_point, secret = agree(points[i : i + POINT_SIZE])
        except ValueError:
            answers += _REFUSED
        else:
            answers += sender_point + secret
    return bytes(answers)


if __name__ == "__main__":
    helper_process.serve(_answer)
