"""The ``pushgate`` command: serve, database, users, topics and keys.

Exit codes: 0 success, 1 a user error with a message on stderr (unknown topic, name taken, bad config),
2 a usage error (argparse). Secrets are printed once, on stdout, and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gateway.config import Config, load_config
from gateway.envelope import iso
from gateway.errors import PushgateError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pushgate", description="Self-hosted push-notification gateway.")
    parser.add_argument("--config", help="TOML configuration file (default: $PUSHGATE_CONFIG, else built-in)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("serve", help="run the MQTT broker and the HTTP bridge in one process")

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply pending migrations (serve does this at start too)")

    user = commands.add_parser("user", help="users and their tokens").add_subparsers(
        dest="action", required=True
    )
    create_user = user.add_parser("create", help="create a user; prints its token once")
    create_user.add_argument("name")

    topic = commands.add_parser("topic", help="topics").add_subparsers(dest="action", required=True)
    create_topic = topic.add_parser("create", help="create a topic")
    create_topic.add_argument("name", help="1-64 characters of A-Z a-z 0-9 _ -")
    create_topic.add_argument("--private", action="store_true", help="pushing and reading need a key")
    create_topic.add_argument("--description", default="")
    create_topic.add_argument("--owner", help="user who owns the topic (their token grants it)")
    topic.add_parser("list", help="list topics")

    key = commands.add_parser("key", help="topic API keys").add_subparsers(dest="action", required=True)
    create_key = key.add_parser("create", help="create an API key for a topic; prints it once")
    create_key.add_argument("topic")
    create_key.add_argument("--label", default="", help="a name to recognise the key by, e.g. the device")
    list_keys = key.add_parser("list", help="list a topic's keys (never the secrets)")
    list_keys.add_argument("topic")
    revoke = key.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    return parser


@contextlib.asynccontextmanager
async def _gateway(config: Config) -> AsyncIterator[Any]:
    from gateway.core import Gateway

    async with Gateway.running(config) as gw:
        yield gw


_SWITCH_INTERVAL = 0.0002  # seconds; Python's default is 0.005 (``_tune_runtime``)


def _tune_runtime() -> None:
    """Interpreter settings for a long-running server: the garbage collector and the GIL's switch interval.

    Python's defaults run a young-generation collection every 700 allocations and a full one every
    ~70,000; with thousands of connections a full collection walks every session object (about 200 ms
    at 2,000 connections on a 2-core machine). Freezing what start-up allocated and raising the first
    threshold keeps collections rare and short without turning the collector off.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    # A thread calling into SQLite (aiosqlite's, for the async sessions) lets go of the GIL for every call
    # and must take it back from the event loop's thread, which a busy loop hands over only every switch
    # interval (5 ms by default): a query of a few calls then waited tens of milliseconds for the GIL. A
    # shorter interval changes nothing while only the loop runs Python.
    sys.setswitchinterval(_SWITCH_INTERVAL)


async def _serve(config: Config) -> None:
    from gateway.serve import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, shutdown_trigger=stop.wait)


async def _db_upgrade(config: Config, _args: argparse.Namespace) -> None:
    from gateway.storage import database

    engine = database.create_engine(config.storage)
    try:
        await database.upgrade(engine)
        print(f"database at migration {await database.current_revision(engine)}")
    finally:
        await engine.dispose()


async def _user_create(config: Config, args: argparse.Namespace) -> None:
    async with _gateway(config) as gw:
        created = await gw.admin.create_user(args.name)
    print(f"created user {args.name} ({created.id})")
    print(f"token: {created.secret}")
    print("Store the token now: it is not shown again.")


async def _topic_create(config: Config, args: argparse.Namespace) -> None:
    async with _gateway(config) as gw:
        topic = await gw.admin.create_topic(
            args.name, private=args.private, description=args.description, owner=args.owner
        )
    kind = "private" if topic.is_private else "public"
    print(f"created {kind} topic {topic.name} ({topic.id})")


async def _topic_list(config: Config, _args: argparse.Namespace) -> None:
    async with _gateway(config) as gw:
        rows = await gw.admin.list_topics()
    if not rows:
        print("no topics; create one with: pushgate topic create NAME")
        return
    print(f"{'NAME':<24} {'ACCESS':<8} {'KEYS':>4}  DESCRIPTION")
    for topic, keys in rows:
        access = "private" if topic.is_private else "public"
        print(f"{topic.name:<24} {access:<8} {keys:>4}  {topic.description}")


async def _key_create(config: Config, args: argparse.Namespace) -> None:
    async with _gateway(config) as gw:
        created = await gw.admin.create_key(args.topic, label=args.label)
    print(f"created key {created.id} for topic {args.topic}")
    print(f"key: {created.secret}")
    print("Store the key now: it is not shown again.")


async def _key_list(config: Config, args: argparse.Namespace) -> None:
    async with _gateway(config) as gw:
        keys = await gw.admin.list_keys(args.topic)
    if not keys:
        print(f"topic {args.topic} has no keys; create one with: pushgate key create {args.topic}")
        return
    print(f"{'ID':<36}  {'LABEL':<20} {'CREATED':<20} {'LAST USED':<20} STATUS")
    for key in keys:
        used = iso(key.last_used_at) if key.last_used_at else "-"
        status = f"revoked {iso(key.revoked_at)}" if key.revoked_at else "active"
        print(f"{key.id:<36}  {key.label:<20} {iso(key.created_at):<20} {used:<20} {status}")


async def _key_revoke(config: Config, args: argparse.Namespace) -> None:
    async with _gateway(config) as gw:
        when = await gw.admin.revoke_key(args.key_id)
    print(f"key {args.key_id} revoked at {iso(when)}")


_COMMANDS: dict[tuple[str, str | None], Callable[[Config, argparse.Namespace], Awaitable[None]]] = {
    ("db", "upgrade"): _db_upgrade,
    ("user", "create"): _user_create,
    ("topic", "create"): _topic_create,
    ("topic", "list"): _topic_list,
    ("key", "create"): _key_create,
    ("key", "list"): _key_list,
    ("key", "revoke"): _key_revoke,
}


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )
    # amqtt logs every connection at INFO and every packet at DEBUG; keep its INFO out of a person's view.
    logging.getLogger("amqtt").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("transitions").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if args.command == "serve":
            _configure_logging(config.log.level)
            _tune_runtime()
            try:
                import uvloop  # type: ignore[import-not-found]
            except ImportError:
                asyncio.run(_serve(config))
            else:
                uvloop.run(_serve(config))
            return 0
        _configure_logging("WARNING")
        asyncio.run(_COMMANDS[(args.command, getattr(args, "action", None))](config, args))
    except PushgateError as exc:
        print(f"pushgate: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
