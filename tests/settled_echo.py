"""A helper process for ``tests/test_helper_process.py``: echoes each frame, sent only once settled, but
for a frame that begins with ``unsettled``, echoed ``Unsettled``.

Each frame answered and each ``settle`` begun is told on stderr, one line each; a ``settle`` returns once
the test writes a byte to the pipe whose read end is the file descriptor given as the argument, and
fails if that byte is ``!``."""

from __future__ import annotations

import os
import sys

from gateway import helper_process


def main(gate: int) -> None:
    def answer(data: bytes) -> bytes:
        sys.stderr.write(f"answered {data.decode()}\n")
        sys.stderr.flush()
        return helper_process.Unsettled(data) if data.startswith(b"unsettled") else data

    def settle() -> None:
        sys.stderr.write("settling\n")
        sys.stderr.flush()
        if os.read(gate, 1) == b"!":
            raise OSError("the disk is gone")

    helper_process.serve(answer, settle=settle)


if __name__ == "__main__":
    main(int(sys.argv[1]))
