"""``helper_process.serve`` with ``settle``: an answer goes out only after a ``settle`` call that began
once it was made (the storage journal's sync of SQLite's log), the frames after it are answered
meanwhile, and one call covers all of them; a settle that fails ends the helper with nothing sent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from gateway import helper_process
from tests.conftest import TIMEOUT

_ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def _settled_echo() -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``tests/settled_echo.py`` running, with the write end of the pipe its settles wait on."""
    gate_read, gate_write = os.pipe()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.settled_echo", str(gate_read),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        pass_fds=(gate_read,), cwd=_ROOT,
    )  # fmt: skip
    os.close(gate_read)
    try:
        yield process, gate_write
    finally:
        os.close(gate_write)
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _line(stderr: asyncio.StreamReader) -> str:
    return (await asyncio.wait_for(stderr.readline(), TIMEOUT)).decode().strip()


async def test_an_answer_waits_for_a_settle_begun_after_it_and_one_covers_those_made_meanwhile() -> None:
    async with _settled_echo() as (process, gate_write):
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        process.stdin.write(helper_process.frame(b"first"))
        assert await _line(process.stderr) == "answered first"
        assert await _line(process.stderr) == "settling"  # the sender holds "first" until this returns

        process.stdin.write(helper_process.frame(b"second") + helper_process.frame(b"third"))
        assert await _line(process.stderr) == "answered second"
        assert await _line(process.stderr) == "answered third"
        answer = asyncio.ensure_future(helper_process.read_frame(process.stdout))
        done, _ = await asyncio.wait([answer], timeout=0.2)
        assert not done, "an answer went out before its settle returned"

        os.write(gate_write, b"x")  # the first settle returns: "first" goes out, the others wait
        assert await asyncio.wait_for(answer, TIMEOUT) == b"first"
        assert await _line(process.stderr) == "settling"  # one settle for both
        answer = asyncio.ensure_future(helper_process.read_frame(process.stdout))
        done, _ = await asyncio.wait([answer], timeout=0.2)
        assert not done, "answers made during a settle went out without one of their own"

        os.write(gate_write, b"x")
        assert await asyncio.wait_for(answer, TIMEOUT) == b"second"
        assert await asyncio.wait_for(helper_process.read_frame(process.stdout), TIMEOUT) == b"third"

        process.stdin.close()  # the end of the input ends the helper, with nothing left to settle
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
        assert await process.stderr.read() == b""


async def test_an_unsettled_answer_calls_no_settle_and_waits_only_for_the_answers_before_it() -> None:
    """The storage journal's recorder transactions: answered at their commit, in order with the others."""
    async with _settled_echo() as (process, gate_write):
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        process.stdin.write(helper_process.frame(b"unsettled alone"))
        assert await _line(process.stderr) == "answered unsettled alone"
        assert (
            await asyncio.wait_for(helper_process.read_frame(process.stdout), TIMEOUT) == b"unsettled alone"
        )

        process.stdin.write(helper_process.frame(b"first"))
        assert await _line(process.stderr) == "answered first"
        assert await _line(process.stderr) == "settling"
        process.stdin.write(helper_process.frame(b"unsettled behind"))
        assert await _line(process.stderr) == "answered unsettled behind"
        answer = asyncio.ensure_future(helper_process.read_frame(process.stdout))
        done, _ = await asyncio.wait([answer], timeout=0.2)
        assert not done, "an answer went out ahead of one made before it"

        os.write(gate_write, b"x")  # "first" is settled; the unsettled one follows it without a settle
        assert await asyncio.wait_for(answer, TIMEOUT) == b"first"
        assert (
            await asyncio.wait_for(helper_process.read_frame(process.stdout), TIMEOUT) == b"unsettled behind"
        )

        process.stdin.close()
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
        assert await process.stderr.read() == b""  # no "settling" besides the one for "first"


async def test_a_failed_settle_ends_the_helper_with_its_answers_unsent() -> None:
    async with _settled_echo() as (process, gate_write):
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        process.stdin.write(helper_process.frame(b"first"))
        assert await _line(process.stderr) == "answered first"
        assert await _line(process.stderr) == "settling"
        os.write(gate_write, b"!")  # the sync fails: "first" may not be on disk, so it is never answered
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 1
        assert await process.stdout.read() == b""  # the gateway reads the end: "the helper ended"
        assert b"OSError: the disk is gone" in await process.stderr.read()
