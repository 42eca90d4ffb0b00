"""A stock amqtt 0.12.1 broker for the baseline: no pushgate code, anonymous clients allowed.

Run by ``harness.run_amqtt`` in its own process. Binds 127.0.0.1 on an ephemeral port (or ``--port``),
prints ``amqtt ready: mqtt=mqtt://127.0.0.1:PORT`` once listening, and stops cleanly on SIGTERM/SIGINT.
Same interpreter and event loop implementation (uvloop when installed, as for ``pushgate serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from amqtt.broker import Broker


async def _main(host: str, port: int) -> None:
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(config)
    await broker.start()
    try:
        bound = broker._servers["default"].instance.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"amqtt ready: mqtt=mqtt://{host}:{bound}", flush=True)
        await stop.wait()
    finally:
        await broker.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): an ephemeral port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        asyncio.run(_main(args.host, args.port))
    else:  # the same event loop as ``pushgate serve`` gets, so the comparison is amqtt's code alone
        uvloop.run(_main(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
