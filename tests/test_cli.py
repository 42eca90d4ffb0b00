"""The ``pushgate`` command as a person uses it: output, exit codes, secrets shown once, --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.storage import database
from tests.process import gateway_env, pushgate


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return gateway_env(tmp_path / "data")


async def test_topic_key_lifecycle(env: dict[str, str]) -> None:
    code, out, _ = await pushgate(env, "topic", "create", "my-topic", "--private", "--description", "Kitchen")
    assert code == 0 and "created private topic my-topic" in out

    code, out, _ = await pushgate(env, "key", "create", "my-topic", "--label", "esp32")
    assert code == 0
    key = re.search(r"^key: (pk_\S+)$", out, re.M)
    key_id = re.search(r"^created key (\S+) for topic my-topic$", out, re.M)
    assert key and key_id

    code, out, _ = await pushgate(env, "topic", "list")
    assert code == 0
    assert re.search(r"^my-topic\s+private\s+1\s+Kitchen$", out, re.M)

    code, out, _ = await pushgate(env, "key", "list", "my-topic")
    assert code == 0
    assert key_id.group(1) in out and "esp32" in out and "active" in out
    assert key.group(1) not in out, "a key's secret is shown once, at creation"

    code, out, _ = await pushgate(env, "key", "revoke", key_id.group(1))
    assert code == 0 and "revoked" in out
    code, out, _ = await pushgate(env, "key", "list", "my-topic")
    assert "revoked" in out
    code, out, _ = await pushgate(env, "topic", "list")
    assert re.search(r"^my-topic\s+private\s+0\s+Kitchen$", out, re.M)


async def test_user_create_prints_a_token_once(env: dict[str, str]) -> None:
    code, out, _ = await pushgate(env, "user", "create", "alice")
    assert code == 0 and re.search(r"^token: pt_\S+$", out, re.M)
    code, _, err = await pushgate(env, "user", "create", "alice")
    assert code == 1 and 'a user named "alice" exists already' in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("topic", "create", "bad name!"), "a topic name is 1-64 characters"),
        (("key", "create", "missing"), 'topic "missing" does not exist'),
        (("key", "list", "missing"), 'topic "missing" does not exist'),
        (("key", "revoke", "no-such-id"), "no API key with id no-such-id"),
        (("topic", "create", "x", "--owner", "nobody"), 'no user named "nobody"'),
    ],
)
async def test_user_errors_exit_1_with_a_message(
    env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    code, out, err = await pushgate(env, *args)
    assert code == 1, out
    assert message in err
    assert "Traceback" not in err


async def test_duplicate_topic_is_refused(env: dict[str, str]) -> None:
    assert (await pushgate(env, "topic", "create", "t"))[0] == 0
    code, _, err = await pushgate(env, "topic", "create", "t")
    assert code == 1 and 'topic "t" exists already' in err


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("serve",),
        ("db", "upgrade"),
        ("user", "create"),
        ("topic", "create"),
        ("topic", "list"),
        ("key", "create"),
        ("key", "list"),
        ("key", "revoke"),
    ],
)
async def test_help_on_each_command(env: dict[str, str], args: tuple[str, ...]) -> None:
    code, out, _ = await pushgate(env, *args, "--help")
    assert code == 0
    assert out.startswith("usage: pushgate")


async def test_usage_error_exits_2(env: dict[str, str]) -> None:
    code, _, err = await pushgate(env, "topic", "frobnicate")
    assert code == 2 and "invalid choice" in err


async def test_db_upgrade_and_a_missing_config_file(env: dict[str, str], tmp_path: Path) -> None:
    code, out, _ = await pushgate(env, "db", "upgrade")
    assert code == 0 and f"database at migration {database.head_revision()}" in out
    code, _, err = await pushgate(env, "--config", str(tmp_path / "nope.toml"), "topic", "list")
    assert code == 1 and "nope.toml does not exist" in err


async def test_serve_on_a_taken_port_says_so(env: dict[str, str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, _, err = await pushgate(env | {"PUSHGATE_MQTT_PORT": port}, "serve")
        assert code == 1
        assert f"cannot listen for MQTT on 127.0.0.1:{port}" in err and "PUSHGATE_MQTT_PORT" in err
        code, _, err = await pushgate(env | {"PUSHGATE_HTTP_PORT": port}, "serve")
        assert code == 1
        assert f"cannot listen for HTTP on 127.0.0.1:{port}" in err and "Traceback" not in err
