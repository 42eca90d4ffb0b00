"""The firmware examples say what the gateway does (issue 7, acceptance 4).

The defaults in each ``config.h`` / ``config.py``, the MQTT topics the sketches build, the payload they
publish, the HTTP request of the HTTP sketch and the JSON fields they read are checked against the
gateway's own code (``MqttConfig``, ``HttpConfig``, ``broker.topics``, ``message_topic``, validation,
the bridge's routes and header shortcuts), and the request and the parsing are run against a live gateway.
Every topic, port, header, setting, environment variable, CLI command and HTTP path in the firmware
READMEs is checked the same way, and the HTTP README's curl block is run as written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import runpy
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Blueprint, Quart
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

import http_bridge.app
from broker.topics import DEVICE_LEAVES, GATEWAY_LEAVES, parse_topic
from gateway.admin import Admin
from gateway.channels.mqtt import message_topic
from gateway.cli import _parser
from gateway.config import Config, HttpConfig, LimitsConfig, MqttConfig
from gateway.request import PushRequest
from gateway.validation import validate
from http_bridge.push import _SHORTCUTS
from tests.conftest import TIMEOUT, MqttClient, Server, bearer, stored_messages
from tests.process import gateway_env, start_gateway
from tests.test_firmware import CXXFLAGS, FIRMWARE, STUBS, gxx

MQTT_FOLDERS = ["esp32_mqtt", "esp8266_mqtt", "arduino_wifi_mqtt", "micropython"]
C_MQTT_FOLDERS = MQTT_FOLDERS[:3]
ALL_FOLDERS = [*MQTT_FOLDERS, "esp32_http"]
ALL_LEAVES = DEVICE_LEAVES | GATEWAY_LEAVES
# Headers the bridge reads: its shortcuts (also with ntfy's X- prefix) and its credential headers.
CREDENTIAL_HEADERS = {"authorization", "x-api-key", "api-key"}
KNOWN_HEADERS = {*_SHORTCUTS, *(f"x-{h}" for h in _SHORTCUTS), *CREDENTIAL_HEADERS, "content-type"}
# Ports a README may name: the gateway's own, and the usual port of a TLS proxy in front of it.
TLS_PORTS = {8883, 443}


# -- reading the examples ---------------------------------------------------------------------------


def c_value(text: str) -> object:
    if text.startswith('"'):
        return json.loads(text)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def settings(folder: str) -> dict[str, object]:
    """A folder's settings with their defaults: ``#define``s of config.h, or config.py's names."""
    if folder == "micropython":
        values = runpy.run_path(str(FIRMWARE / folder / "config.py"))
        return {k: v for k, v in values.items() if k.isupper()}
    text = (FIRMWARE / folder / "config.h").read_text()
    found = {m[1]: c_value(m[2]) for m in re.finditer(r"^#define\s+(\w+)\s+(.*?)\s*(?://.*)?$", text, re.M)}
    found.update((name, "<PEM>") for name in re.findall(r"^static const char (\w+)\[\] =", text, re.M))
    return found


def source(folder: str) -> str:
    name = "main.py" if folder == "micropython" else f"{folder}.ino"
    return (FIRMWARE / folder / name).read_text()


def char_constants(text: str) -> dict[str, str]:
    """``const char *const NAME = "value";`` in a sketch, ``NAME = "value"`` in main.py."""
    found = re.findall(r'const char \*const (\w+) = ("[^"]*");', text)
    found += re.findall(r'^([A-Z_]+) = ("[^"]*")$', text, re.M)
    return {name: json.loads(value) for name, value in found}


def split_plus(expr: str) -> list[str]:
    """The operands of ``+`` outside string literals (which may hold escaped quotes)."""
    parts, current, quoted, escaped = [], "", False, False
    for char in expr:
        if char == "+" and not quoted:
            parts.append(current)
            current = ""
            continue
        current += char
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = quoted
        elif char == '"':
            quoted = not quoted
    return [*parts, current]


def evaluate(expr: str, names: dict[str, object]) -> str:
    """A string concatenation as the sketches write them (``String(A) + "/" + B``, ``config.A + "/"``),
    with C's ``FLAG ? "a" : "b"``; names come from the settings and the sketch's constants."""
    expr = re.sub(r'(\w+) \? ("[^"]*") : ("[^"]*")', lambda m: m[2] if names[m[1]] else m[3], expr)
    out = []
    for part in split_plus(expr):
        part = part.strip()
        inner = re.fullmatch(r"String\((.*)\)", part, re.S)
        part = (inner[1] if inner else part).strip().removeprefix("config.")
        out.append(json.loads(part) if part.startswith('"') else str(names[part]))
    return "".join(out)


def topics(folder: str) -> dict[str, str]:
    """The MQTT topics an example builds, by the leaf they end in."""
    text, names = source(folder), settings(folder)
    if folder == "micropython":
        exprs = re.findall(r"^\w+_TOPIC = (config\.PUSHGATE_PREFIX .*)$", text, re.M)
    else:
        exprs = re.findall(r"^const String \w+Topic = (.*?);", text, re.M | re.S)
    built = [evaluate(expr, names) for expr in exprs]
    return {t.rsplit("/", 1)[1]: t for t in built}


# -- acceptance 4: the sketches against the gateway's code ------------------------------------------------


@pytest.mark.parametrize("folder", MQTT_FOLDERS)
def test_mqtt_settings_and_topics_are_the_gateways(folder: str) -> None:
    names, mqtt = settings(folder), MqttConfig()
    assert names["PUSHGATE_PREFIX"] == mqtt.prefix
    assert names["PUSHGATE_MQTT_PORT"] == mqtt.port
    topic = str(names["PUSHGATE_TOPIC"])
    built = topics(folder)
    assert set(built) == {"push", "action", "error"}
    assert "push" in DEVICE_LEAVES and {"action", "error"} <= GATEWAY_LEAVES
    for leaf, mqtt_topic in built.items():
        parsed = parse_topic(mqtt.prefix, mqtt_topic)
        assert parsed is not None and (parsed.name, parsed.leaf) == (topic, leaf), mqtt_topic
    assert built["action"] == message_topic(mqtt.prefix, topic, "action")  # where the gateway publishes it


@pytest.mark.parametrize("folder", MQTT_FOLDERS)
def test_the_key_is_the_mqtt_password(folder: str) -> None:
    text = source(folder)
    calls = {
        "micropython": r"user=self\.name,\s+password=config\.PUSHGATE_KEY",
        "arduino_wifi_mqtt": r"mqtt\.setUsernamePassword\(DEVICE_NAME, PUSHGATE_KEY\)",
    }
    pattern = calls.get(folder, r"mqtt\.connect\(DEVICE_NAME, DEVICE_NAME, PUSHGATE_KEY,")
    assert re.search(pattern, text), f"{folder} does not connect with the key as the password"


@pytest.mark.parametrize("folder", C_MQTT_FOLDERS)
def test_the_published_payload_is_a_valid_push_with_the_actions_it_listens_for(folder: str) -> None:
    text = source(folder)
    names: dict[str, object] = {**settings(folder), **char_constants(text)}
    names.update(title="Button pressed", message="esp32-door: approve?", priority="high")  # esp32's arguments
    [expr] = re.findall(r'(String\("\{\\"title\\":.*?);\n', text, re.S)
    body = json.loads(evaluate(expr, names))
    message = validate(
        PushRequest.from_fields(str(names["PUSHGATE_TOPIC"]), body, source="mqtt"), LimitsConfig()
    )
    assert message.priority == "high"
    assert [a["id"] for a in message.actions] == [names["APPROVE_ACTION"], names["REJECT_ACTION"]]
    assert (names["APPROVE_ACTION"], names["REJECT_ACTION"]) == ("approve", "reject")


def test_every_example_listens_for_the_same_action_ids() -> None:
    for folder in MQTT_FOLDERS:
        constants = char_constants(source(folder))
        assert (constants["APPROVE_ACTION"], constants["REJECT_ACTION"]) == ("approve", "reject"), folder


def http_sketch_request() -> tuple[str, dict[str, str], str]:
    """The HTTP sketch's request: URL (from its config.h defaults), headers and body of the button press."""
    text, names = source("esp32_http"), settings("esp32_http")
    [url_expr] = re.findall(r"^const String pushUrl = (.*?);", text, re.M | re.S)
    url = evaluate(url_expr, names)
    [(title, message_expr, priority)] = re.findall(r'push\(("[^"]*"), (.*?), ("[^"]*")\);', text)
    args = {"title": json.loads(title), "priority": json.loads(priority)}
    headers = {}
    for name, value in re.findall(r'http\.addHeader\("([^"]+)", (.*?)\);', text):
        headers[name] = evaluate(value, {**names, **args})
    return url, headers, evaluate(message_expr, names)


def test_the_http_sketch_uses_the_gateways_port_path_and_headers() -> None:
    url, headers, _body = http_sketch_request()
    names = settings("esp32_http")
    assert names["PUSHGATE_HTTP_PORT"] == HttpConfig().port
    assert url == f"http://{names['PUSHGATE_HOST']}:{HttpConfig().port}/api/push/{names['PUSHGATE_TOPIC']}"
    assert_route(httpx.URL(url).path)
    assert {h.lower() for h in headers} <= KNOWN_HEADERS
    assert {"title", "priority"} <= {h.lower() for h in headers} and set(_SHORTCUTS) >= {"title", "priority"}
    assert headers["Authorization"] == f"Bearer {names['PUSHGATE_KEY']}"


async def test_the_http_sketchs_request_is_accepted_without_a_redirect(
    server: Server, admin: Admin, http: httpx.AsyncClient
) -> None:
    url, headers, body = http_sketch_request()
    topic = str(settings("esp32_http")["PUSHGATE_TOPIC"])
    await admin.create_topic(topic, private=True)
    key = (await admin.create_key(topic, label="esp32")).secret
    sent = httpx.URL(url)
    headers["Authorization"] = f"Bearer {key}"  # the key the user pastes into config.h
    response = await http.post(sent.path, headers=headers, content=body.encode())  # the test server's host
    assert response.status_code == 200, response.text  # not a 3xx: httpx follows no redirect unless asked
    assert response.json()["success"] is True
    [stored] = await stored_messages(server.config)
    assert (stored.title, stored.message, stored.priority) == ("Button pressed", body, "high")


def json_reader(tmp_path: Path, folder: str) -> Path:
    """The sketch's own ``jsonString`` compiled on the host and linked with ``firmware_stubs/host``: the
    String members it uses and a main() that prints the fields named on its command line."""
    [function] = re.findall(r"^String jsonString\(.*?^}\n", source(folder), re.M | re.S)
    unit = tmp_path / f"{folder}_json.cpp"
    unit.write_text("#include <Arduino.h>\n\n" + function)
    binary = tmp_path / f"{folder}_json"
    host = STUBS / "host"
    command = [gxx(), *CXXFLAGS, f"-I{STUBS / 'common'}", str(unit), str(host / "read_fields.cpp")]
    command += [str(host / "WString.cpp"), "-o", str(binary)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return binary


async def test_the_sketches_read_the_action_event_the_gateway_publishes(
    server: Server, admin: Admin, http: httpx.AsyncClient, make_client: Any, tmp_path: Path
) -> None:
    await admin.create_topic("alarm", private=True)
    key = (await admin.create_key("alarm")).secret
    device: MqttClient = await make_client(username="esp32-door", password=key)
    assert await device.subscribe("pushgate/alarm/action") == 1
    actions = [{"id": "approve", "label": "Approve"}, {"id": "reject", "label": "Reject"}]
    pushed = (
        await http.post("/api/push/alarm", json={"message": "m", "actions": actions}, headers=bearer(key))
    ).json()
    tricky = 'said "action_id":"reject" twice'  # a reply that quotes another action must not fool the parser
    report = {"message_id": pushed["id"], "action_id": "approve", "reply_text": tricky}
    assert (await http.post("/api/action", json=report, headers=bearer(key))).status_code == 200
    event = (await device.receive()).payload
    assert json.loads(event)["action_id"] == "approve"

    for folder in C_MQTT_FOLDERS:
        fields = sorted(set(re.findall(r'jsonString\(body, "(\w+)"\)', source(folder))))
        binary = await asyncio.to_thread(json_reader, tmp_path, folder)  # g++ off the server's event loop
        command = [str(binary), *fields]
        result = await asyncio.to_thread(
            subprocess.run, command, input=event, capture_output=True, timeout=TIMEOUT
        )
        assert result.returncode == 0
        read = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
        assert read == {"action_id": "approve", "message_id": pushed["id"]}, folder


# -- acceptance 4: the READMEs against the gateway's code -----------------------------------------------


def readmes() -> list[Path]:
    return sorted(FIRMWARE.glob("**/README.md"))


def sh_lines(text: str) -> list[str]:
    """The commands of the ``sh`` blocks, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def routes() -> Any:
    """The bridge's URL map: every blueprint that ``http_bridge.app`` registers, in a bare app."""
    app = Quart("routes")
    for value in vars(http_bridge.app).values():
        blueprint = getattr(value, "blueprint", value)
        if isinstance(blueprint, Blueprint):
            app.register_blueprint(blueprint)
    return app.url_map.bind("localhost")


def assert_route(path: str, method: str = "POST") -> None:
    try:
        routes().match(path, method=method)
    except RequestRedirect as redirect:
        raise AssertionError(f"{method} {path} is redirected to {redirect.new_url}") from None
    except HTTPException as exc:
        raise AssertionError(f"{method} {path}: {exc.code}, not a route of the bridge") from None


def test_there_is_a_readme_per_example() -> None:
    assert {p.parent.name for p in readmes()} == {"firmware", *ALL_FOLDERS}


@pytest.mark.parametrize("readme", readmes(), ids=lambda p: p.parent.name)
def test_readme_topics_ports_and_headers_are_the_gateways(readme: Path) -> None:
    text = readme.read_text()
    mqtt, http = MqttConfig(), HttpConfig()
    # prefix/name/leaf, not inside a URL or a path (…:8080/api/action, /api/push/alarm)
    topics_named = re.findall(r"(?<![\w/:.<>-])([\w<>]+)/([\w<>+#-]+)/([\w<>+#]+)", text)
    ours = [t for t in topics_named if t[0] in (mqtt.prefix, "<prefix>")]
    assert ours, "the README names no pushgate topic"
    for prefix, _name, leaf in topics_named:
        if leaf in ALL_LEAVES:
            assert prefix in (mqtt.prefix, "<prefix>"), f"{prefix}/…/{leaf}"
    for _prefix, _name, leaf in ours:
        assert leaf in ALL_LEAVES | {"#", "+", "<leaf>"}, f"pushgate/…/{leaf} is not a topic of the contract"
    for line in text.splitlines():
        for port in re.findall(r"(?i)(?:\bport\s+|:|-p\s+)`?(\d{3,5})\b", line):
            allowed = {mqtt.port, http.port} | (TLS_PORTS if re.search(r"TLS|HTTPS|proxy", line) else set())
            assert int(port) in allowed, f"port {port} in: {line}"
    headers = re.findall(r"-H ['\"]([\w-]+):", text)
    for line in text.splitlines():
        if re.search(r"(?i)header", line):
            headers += re.findall(r"`([A-Z][a-z]+(?:-[A-Z][a-z]+)*)(?::[^`]*)?`", line)
    if readme.parent.name == "esp32_http":
        assert {"authorization", "title", "priority"} <= {h.lower() for h in headers}, headers
    for header in headers:
        assert header.lower() in KNOWN_HEADERS, f"header {header} is not one pushgate reads"


@pytest.mark.parametrize("folder", ALL_FOLDERS)
def test_readme_settings_are_the_config_files(folder: str) -> None:
    text = (FIRMWARE / folder / "README.md").read_text()
    names = settings(folder)
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| `([^`]*)` \|", text, re.M)
    assert rows, "the README has no settings table"
    for name, default in rows:
        assert name in names, f"{name} is not a setting in {folder}'s config"
        assert c_value(default) == names[name], (
            f"the README says {name} is {default}; the file says {names[name]!r}"
        )
    mentioned = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", text))
    unknown = {n for n in mentioned if n not in names and not env_setting(n)} - {d for _, d in rows}
    assert not unknown, f"{sorted(unknown)} are neither settings of {folder} nor pushgate variables"


def env_setting(name: str) -> bool:
    """``PUSHGATE_<SECTION>_<KEY>`` names a key of the gateway's configuration."""
    match = re.fullmatch(r"PUSHGATE_([A-Z]+)_([A-Z_]+)", name)
    if match is None:
        return False
    section = getattr(Config(), match[1].lower(), None)
    return section is not None and match[2].lower() in {f.name for f in dataclasses.fields(section)}


@pytest.mark.parametrize("readme", readmes(), ids=lambda p: p.parent.name)
def test_readme_commands_are_the_gateways(readme: Path) -> None:
    lines = sh_lines(readme.read_text())
    parser = _parser()
    for line in lines:
        for assignment in re.findall(r"\b(PUSHGATE_[A-Z_]+)=", line):
            assert env_setting(assignment), f"{assignment} is not a configuration key: {line}"
        for command in re.findall(r"(?:^|\$\(|\s)(?:\S*/)?pushgate ([^|)]*)", line):
            args = shlex.split(command)
            try:
                parser.parse_args(args)
            except SystemExit:
                raise AssertionError(f"`pushgate {command}` is not a command of the CLI") from None
        if line.lstrip().startswith("curl"):
            [url] = re.findall(r"https?://\S+", line)
            assert_route(httpx.URL(url.strip("'\"")).path)
        if line.lstrip().startswith("mosquitto_"):
            [topic] = re.findall(r"-t '([^']+)'", line)
            assert topic.split("/")[0] == MqttConfig().prefix


async def test_the_http_readme_curl_block_works_as_written(tmp_path: Path) -> None:
    """The HTTP example's README shows the sketch's request as curl: run it against a gateway process."""
    text = (FIRMWARE / "esp32_http" / "README.md").read_text()
    block = text.split("## Try the request from your computer\n", 1)[1].split("\n## ", 1)[0]
    [script] = re.findall(r"```sh\n(.*?)```", block, re.S)
    names = settings("esp32_http")
    env = gateway_env(tmp_path / "data")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    gateway = await start_gateway(env)
    try:
        host = f"{names['PUSHGATE_HOST']}:{names['PUSHGATE_HTTP_PORT']}"
        assert host in script
        script = script.replace(host, f"127.0.0.1:{gateway.http_port}")
        proc = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", script, cwd=FIRMWARE.parent, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT * 2)
        assert proc.returncode == 0, err.decode()
        answer = json.loads(out.decode().strip().splitlines()[-1])
        assert answer["success"] is True and answer["topic"] == names["PUSHGATE_TOPIC"]
    finally:
        await gateway.stop(signal.SIGTERM)
    _url, headers, body = http_sketch_request()
    for name, value in headers.items():
        if name != "Authorization":
            assert f'-H "{name}: {value}"' in script, f"the README's curl differs from the sketch: {name}"
    assert f'-d "{body}"' in script
