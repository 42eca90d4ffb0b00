"""Every firmware sketch compiles (issue 7, acceptance 1).

Each sketch in ``firmware/`` is compiled by the host's g++ against ``tests/firmware_stubs``: declarations
of the Arduino, board WiFi, PubSubClient, HTTPClient and ArduinoMqttClient APIs with the real libraries'
signatures, one stub folder per board family. Wrong calls are shown to fail there, so a passing compile
means the API is used as the libraries declare it. ``tests/test_firmware_contract.py`` checks what the
sketches say against the gateway.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
FIRMWARE = ROOT / "firmware"
STUBS = Path(__file__).parent / "firmware_stubs"
CXXFLAGS = ["-std=gnu++17", "-Wall", "-Wextra", "-Werror"]


@dataclasses.dataclass(frozen=True)
class Sketch:
    folder: str
    stubs: str  # the board's stub folder
    board: str  # the macro the board's core defines

    @property
    def path(self) -> Path:
        return FIRMWARE / self.folder / f"{self.folder}.ino"

    def __str__(self) -> str:
        return f"{self.folder}[{self.board}]"


SKETCHES = [
    Sketch("esp32_mqtt", "esp32", "ESP32"),
    Sketch("esp32_http", "esp32", "ESP32"),
    Sketch("esp8266_mqtt", "esp8266", "ESP8266"),
    Sketch("arduino_wifi_mqtt", "arduino", "ARDUINO_UNOR4_WIFI"),
    Sketch("arduino_wifi_mqtt", "arduino", "ARDUINO_SAMD_NANO_33_IOT"),
]
MQTT_SKETCHES = [s for s in SKETCHES if s.folder.endswith("_mqtt")]


def gxx() -> str:
    found = shutil.which("g++")
    assert found, "g++ is missing: `make test` installs it (SYSTEM_PACKAGES)"
    return found


def tls_on(config_h: str) -> str:
    assert "#define PUSHGATE_USE_TLS 0" in config_h
    return config_h.replace("#define PUSHGATE_USE_TLS 0", "#define PUSHGATE_USE_TLS 1")


def compile_sketch(
    sketch: Sketch, tmp_path: Path, *, source: str | None = None, config: str | None = None
) -> subprocess.CompletedProcess[str]:
    """g++ -fsyntax-only on the sketch as the Arduino build sees it (Arduino.h first, config.h beside it);
    ``source`` and ``config`` replace the texts of the sketch and of its config.h."""
    folder = tmp_path / sketch.folder
    folder.mkdir(exist_ok=True)
    (folder / sketch.path.name).write_text(sketch.path.read_text() if source is None else source)
    (folder / "config.h").write_text(
        (sketch.path.parent / "config.h").read_text() if config is None else config
    )
    unit = folder / "unit.cpp"
    unit.write_text(f'#include <Arduino.h>\n#include "{sketch.path.name}"\n')
    command = [gxx(), *CXXFLAGS, "-fsyntax-only", f"-D{sketch.board}", f"-I{STUBS / 'common'}"]
    command += [f"-I{STUBS / sketch.stubs}", f"-I{folder}", str(unit)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


# -- acceptance 1: every sketch compiles against the stubs ----------------------------------------------


def test_every_sketch_in_firmware_is_compiled() -> None:
    assert {p.parent.name for p in FIRMWARE.glob("*/*.ino")} == {s.folder for s in SKETCHES}


@pytest.mark.parametrize("sketch", SKETCHES, ids=str)
def test_sketch_compiles(sketch: Sketch, tmp_path: Path) -> None:
    result = compile_sketch(sketch, tmp_path)
    assert result.returncode == 0, result.stderr


# (sketch, text in it, replacement): API misuse the real libraries refuse, which the stubs must refuse too.
WRONG_CALLS = [
    (SKETCHES[0], "mqtt.publish(pushTopic.c_str(), payload.c_str())", "mqtt.publish(pushTopic, payload)"),
    (SKETCHES[0], "mqtt.subscribe(actionTopic.c_str(), 1)", "mqtt.subscribe(actionTopic, 1)"),
    (SKETCHES[0], "net.setCACert(PUSHGATE_CA_CERT);", "net.setCACert(PUSHGATE_CA_CERT, 1);"),
    (SKETCHES[1], 'http.addHeader("Title", title);', 'http.addHeader("Title");'),
    (SKETCHES[1], "int status = http.POST(message);", "int status = http.POST(message, 1);"),
    (SKETCHES[2], "#include <ESP8266WiFi.h>", "#include <WiFi.h>"),  # the ESP32's header
    (SKETCHES[2], "mqtt.setCallback(onMessage);", "mqtt.setCallback(onMessage, 1);"),
    (SKETCHES[3], "mqtt.onMessage(onMessage);", "mqtt.onMessage(publishPress);"),
    (SKETCHES[3], 'Serial.println("LED on");', 'Serial.printf("LED on\\n");'),  # no printf off the ESPs
    (
        SKETCHES[4],
        "mqtt.beginMessage(pushTopic, payload.length(), false, 1);",
        "mqtt.beginMessage(payload, 1, 2);",
    ),
]


@pytest.mark.parametrize(("sketch", "text", "wrong"), WRONG_CALLS, ids=lambda v: str(v)[:40])
def test_stubs_refuse_a_wrong_call(sketch: Sketch, text: str, wrong: str, tmp_path: Path) -> None:
    source = sketch.path.read_text()
    assert text in source, f"{sketch} no longer contains {text!r}: update this case"
    config = tls_on((sketch.path.parent / "config.h").read_text()) if "setCACert" in text else None
    result = compile_sketch(sketch, tmp_path, source=source.replace(text, wrong), config=config)
    assert result.returncode != 0, f"{wrong!r} compiled: the stubs are too lenient"
    assert "error" in result.stderr


@pytest.mark.parametrize("sketch", [s for s in SKETCHES if s.folder.startswith("esp32")], ids=str)
def test_the_tls_variant_compiles(sketch: Sketch, tmp_path: Path) -> None:
    result = compile_sketch(sketch, tmp_path, config=tls_on((sketch.path.parent / "config.h").read_text()))
    assert result.returncode == 0, result.stderr
