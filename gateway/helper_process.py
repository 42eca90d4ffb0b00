"""Helper processes of the gateway: a module run as ``python -m <module>`` that answers frames.

The gateway writes frames (4-byte length, then the bytes) to the helper's stdin and reads its answers,
one per frame and in order, from its stdout; both pipes are held by the gateway alone. A helper ends at
the end of its input, so it never outlives the gateway (a SIGKILL closes the pipe too), and it ignores
SIGINT and SIGTERM, which a terminal or a service manager sends to the whole process group at once: the
gateway closes its helpers' input itself once it has finished with them.

Used by the Web Push key agreements (``gateway.channels.webpush_ecdh``) and the storage journal
(``gateway.storage.journal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import BinaryIO

__all__ = ["LENGTH", "Unsettled", "frame", "read_frame", "serve", "start", "stop"]

LENGTH = struct.Struct("!I")


class Unsettled(bytes):
    """An answer that needs no ``settle`` before it goes out (``serve``): it is sent as soon as the answers
    made before it are. The storage journal answers so a transaction whose commit need not be on disk
    before its caller goes on; the next sync covers it anyway."""


def frame(data: bytes) -> bytes:
    return LENGTH.pack(len(data)) + data


async def read_frame(stream: asyncio.StreamReader) -> bytes:
    """The next frame's bytes; ``asyncio.IncompleteReadError`` at the end of the stream."""
    (size,) = LENGTH.unpack(await stream.readexactly(LENGTH.size))
    return await stream.readexactly(size)


async def start(module: str) -> asyncio.subprocess.Process:
    """Start ``python -m module`` with pipes for its input and answers (its stderr is the gateway's)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )


async def stop(process: asyncio.subprocess.Process, wait: float) -> None:
    """Close the helper's input, so it ends once it has answered what it was given; kill it if it has not
    ended after ``wait`` seconds."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), wait)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def serve(answer: Callable[[bytes], bytes | None], *, settle: Callable[[], None] | None = None) -> None:
    """The helper's side: ``answer`` each frame of stdin with a frame on stdout until the input ends (or
    ``answer`` returns ``None``). What else writes to stdout (a library's print) goes to stderr instead, so
    it cannot corrupt the answers.

    With ``settle``, a second thread sends the answers, each only after a call of ``settle`` that began
    once it was made; meanwhile the next frames are answered, and one call covers every answer made
    during the one before. The storage journal's sync of SQLite's log so overlaps its next transaction.
    An ``Unsettled`` answer waits only for the answers before it (they go out in order), and calls no
    ``settle`` of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sink = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # To the sending thread, with ``settle``: each answer's frame, and whether it waits for a settle.
    answers: queue.SimpleQueue[tuple[bytes, bool] | None] | None = None
    sender: threading.Thread | None = None
    if settle is not None:
        answers = queue.SimpleQueue()
        sender = threading.Thread(target=_send_settled, args=(answers, sink, settle), name="answers")
        sender.start()
    try:
        for data in _frames(sys.stdin.buffer):
            answered = answer(data)
            if answered is None:
                return
            if answers is None:
                sink.write(frame(answered))
                sink.flush()
            else:
                answers.put((frame(answered), not isinstance(answered, Unsettled)))
    finally:
        if answers is not None and sender is not None:
            answers.put(None)
            sender.join()


def _frames(source: BinaryIO) -> Iterator[bytes]:
    while len(head := source.read(LENGTH.size)) == LENGTH.size:
        (size,) = LENGTH.unpack(head)
        data = source.read(size)
        if len(data) != size:
            return
        yield data


def _send_settled(
    answers: queue.SimpleQueue[tuple[bytes, bool] | None], sink: BinaryIO, settle: Callable[[], None]
) -> None:
    """Send what was answered after one ``settle`` call for all of it (none when each of it is
    ``Unsettled``), until the end (``None``). If ``settle`` fails, nothing more is sent and the process
    ends: the gateway fails what it had not been answered ("send again") and starts a new helper."""
    while True:
        batch = [answers.get()]
        while not answers.empty():
            batch.append(answers.get())
        ready = [item for item in batch if item is not None]
        if ready:
            if any(waits for _, waits in ready):
                try:
                    settle()
                except Exception:
                    traceback.print_exc()
                    os._exit(1)
            sink.write(b"".join(data for data, _ in ready))
            sink.flush()
        if None in batch:
            return
