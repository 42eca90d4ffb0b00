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
import signal
import struct
import sys
from collections.abc import Callable

__all__ = ["LENGTH", "frame", "read_frame", "serve", "start", "stop"]

LENGTH = struct.Struct("!I")


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


def serve(answer: Callable[[bytes], bytes | None]) -> None:
    """The helper's side: ``answer`` each frame of stdin with a frame on stdout until the input ends (or
    ``answer`` returns ``None``). What else writes to stdout (a library's print) goes to stderr instead, so
    it cannot corrupt the answers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sink = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    source = sys.stdin.buffer
    while len(head := source.read(LENGTH.size)) == LENGTH.size:
        (size,) = LENGTH.unpack(head)
        data = source.read(size)
        if len(data) != size:
            return
        answered = answer(data)
        if answered is None:
            return
        sink.write(frame(answered))
        sink.flush()
