"""Configuration: defaults, the documented file, environment overrides, and clear errors."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from gateway.config import Config, load_config
from gateway.errors import ConfigError

DOCUMENTED = Path(__file__).parent.parent / "config" / "pushgate.toml"


def test_no_file_means_the_defaults() -> None:
    assert load_config(None, env={}) == Config()


def test_the_documented_file_names_every_key_with_its_default() -> None:
    with DOCUMENTED.open("rb") as fh:
        documented = tomllib.load(fh)
    defaults = json.loads(json.dumps(dataclasses.asdict(Config())))  # tuples become lists, as in TOML
    assert documented == defaults
    assert load_config(DOCUMENTED, env={}) == Config()


def test_environment_overrides_single_keys(tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text('[http]\nport = 9000\nhost = "0.0.0.0"\n[mqtt]\nprefix = "home"\n')
    env = {
        "PUSHGATE_CONFIG": str(file),
        "PUSHGATE_HTTP_PORT": "9090",
        "PUSHGATE_MQTT_ALLOW_ANONYMOUS": "false",
        "PUSHGATE_OUTBOX_POLL_INTERVAL": "0.5",
        "PUSHGATE_TOPICS_AUTO_CREATE": "yes",
        "PUSHGATE_MQTT_HOME_ACL": "deny user:guest write home/#; allow user readwrite #",
    }
    config = load_config(None, env=env)
    assert config.http.port == 9090  # env beats the file
    assert config.http.host == "0.0.0.0"  # the file beats the default
    assert config.mqtt.prefix == "home"
    assert config.mqtt.allow_anonymous is False
    assert config.outbox.poll_interval == 0.5
    assert config.topics.auto_create is True
    assert config.mqtt.home_acl == ("deny user:guest write home/#", "allow user readwrite #")


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[http]\nport = 'eighty'\n", {}, "[http] port: expected int"),
        ("[http]\nprot = 80\n", {}, "[http]: unknown key(s) prot"),
        ("[htp]\n", {}, "unknown section(s) htp"),
        ("[http\n", {}, "is not valid TOML"),
        ("", {"PUSHGATE_MQTT_ALLOW_ANONYMOUS": "maybe"}, "PUSHGATE_MQTT_ALLOW_ANONYMOUS: expected bool"),
        ("", {"PUSHGATE_HTTP_PORT": "true"}, "PUSHGATE_HTTP_PORT: expected int"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    file = tmp_path / "p.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(file, env=env)
    assert message in info.value.message


def test_default_database_is_sqlite_under_the_data_dir(tmp_path: Path) -> None:
    config = load_config(None, env={"PUSHGATE_STORAGE_DATA_DIR": str(tmp_path)})
    assert config.storage.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path / 'pushgate.db'}"
    config = load_config(None, env={"PUSHGATE_STORAGE_DATABASE_URL": "postgresql+asyncpg://u:p@db/pushgate"})
    assert config.storage.resolved_database_url() == "postgresql+asyncpg://u:p@db/pushgate"
