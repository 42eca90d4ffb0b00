"""Web Push payload encryption (RFC 8291, ``aes128gcm``) for ``gateway.channels.webpush``: in the event
loop's process, or batched in worker processes (``[webpush] encrypt_processes``).

Each request's body is pywebpush's ``WebPusher.encode``: a fresh ECDH key pair and salt per request, so
no two bodies share a key. What is kept is only the parsing: a subscription's ``p256dh`` point and
``auth`` secret are decoded once and kept (``_ENCODERS`` of them, keyed by the keys themselves, so a
device registered again with new keys is never encrypted to with its old ones).

The encryption is about a third of what a request costs the event loop (the ECDH exchange alone is
most of it), and a thread would not run it beside the loop (the GIL). With ``encrypt_processes`` N > 0
it runs in N worker processes instead: the requests that want encrypting in the same loop iteration go
as one batch (``_BATCH`` at most) per round trip, which costs the loop a few microseconds per body
instead of about eighty. The workers start with the first batch, end with ``close()``, and end
themselves when the gateway's process is gone (SIGKILL leaves no orphan behind).
"""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import os
import signal
import threading
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from cryptography.hazmat.primitives.asymmetric import ec
from pywebpush import WebPusher

__all__ = ["Encryptor"]

_ENCODERS = 10_000  # subscriptions whose decoded keys are kept per process (about 1 KB each)
_BATCH = 64  # bodies encrypted per round trip to a worker process, at most
_ORPHAN_CHECK = 1.0  # seconds between a worker's checks that the gateway's process still exists


class _Encoder(WebPusher):
    """pywebpush's encryption (``WebPusher.encode``) for one subscription, its keys decoded once:
    ``WebPusher.__init__`` deep-copies and base64-decodes the subscription, and http_ece parses the
    ``p256dh`` point, on every send otherwise."""

    def __init__(self, p256dh: str, auth: str) -> None:  # WebPusher.__init__ would decode again
        self.verbose = False
        point = base64.urlsafe_b64decode(p256dh + "=" * (-len(p256dh) % 4))
        # http_ece takes the key as an object too, and then skips parsing it.
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        self.receiver_key = key  # type: ignore[assignment]
        self.auth_key = base64.urlsafe_b64decode(auth + "=" * (-len(auth) % 4))


def _encrypt(encoders: OrderedDict[tuple[str, str], _Encoder], p256dh: str, auth: str, data: bytes) -> bytes:
    """``data`` encrypted to the subscription; a key that is not a P-256 point raises ``ValueError``."""
    key = (p256dh, auth)
    encoder = encoders.get(key)
    if encoder is None:
        encoder = encoders[key] = _Encoder(p256dh, auth)
        if len(encoders) > _ENCODERS:
            encoders.popitem(last=False)
    else:
        encoders.move_to_end(key)
    body: bytes = encoder.encode(data, "aes128gcm")["body"]
    return body


# In a worker process: its own decoded keys.
_worker_encoders: OrderedDict[tuple[str, str], _Encoder] = OrderedDict()


def _worker_start(parent: int) -> None:
    """A worker ignores Ctrl-C (the gateway shuts it down) and exits once the gateway's process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_ORPHAN_CHECK)
        os._exit(0)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _encrypt_batch(batch: list[tuple[str, str, bytes]]) -> list[bytes | str]:
    """In a worker process: each body, or the error that refused it."""
    out: list[bytes | str] = []
    for p256dh, auth, data in batch:
        try:
            out.append(_encrypt(_worker_encoders, p256dh, auth, data))
        except Exception as exc:
            out.append(f"{type(exc).__name__}: {exc}")
    return out


class EncryptionError(ValueError):
    """Raised when a worker process could not encrypt a body (a subscription key that is not a point)."""


_Waiting = tuple[str, str, bytes, asyncio.Future[bytes]]


class Encryptor:
    """Encrypts bodies for subscriptions, in this process (``processes`` 0) or in worker processes."""

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._encoders: OrderedDict[tuple[str, str], _Encoder] = OrderedDict()
        self._executor: ProcessPoolExecutor | None = None
        self._batch: list[_Waiting] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def encrypt(self, p256dh: str, auth: str, data: bytes) -> bytes:
        """``data`` encrypted to the subscription; a key that is not a P-256 point raises ``ValueError``."""
        if not self._processes:
            return _encrypt(self._encoders, p256dh, auth, data)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        batch = self._batch
        batch.append((p256dh, auth, data, future))
        if len(batch) >= _BATCH:
            self._close(batch)
        elif len(batch) == 1:
            # Runs after the calls already ready in this loop iteration have joined the batch.
            loop.call_soon(self._close, batch)
        return await future

    def _close(self, batch: list[_Waiting]) -> None:
        if batch is not self._batch:
            return  # already closed (it filled up)
        self._batch = []
        task = asyncio.create_task(self._run(batch), name="webpush-encrypt")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            try:
                if self._executor is None:
                    self._executor = ProcessPoolExecutor(
                        self._processes,
                        mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded process
                        initializer=_worker_start,
                        initargs=(os.getpid(),),
                    )
                work = [(p256dh, auth, data) for p256dh, auth, data, _ in batch]
                loop = asyncio.get_running_loop()
                bodies = await loop.run_in_executor(self._executor, _encrypt_batch, work)
            except Exception as exc:  # each attempt fails and is retried; a dead worker is replaced
                if isinstance(exc, BrokenProcessPool):
                    self._executor = None
                bodies = [f"the encryption worker failed: {type(exc).__name__}: {exc}"] * len(batch)
            for (*_, future), body in zip(batch, bodies, strict=True):
                if future.done():
                    continue
                if isinstance(body, bytes):
                    future.set_result(body)
                else:
                    future.set_exception(EncryptionError(body))
        finally:
            for *_, future in batch:
                future.cancel()  # only those still open: the batch was cancelled

    async def close(self) -> None:
        """Cancel the batches in flight, then stop the worker processes."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
