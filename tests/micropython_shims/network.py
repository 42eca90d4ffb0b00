"""MicroPython's ``network`` for CPython: a station interface that joins at once (the test's network is
the loopback interface)."""

from __future__ import annotations

STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_GOT_IP = 1010


class WLAN:
    def __init__(self, interface_id: int = STA_IF) -> None:
        self._active = False
        self._connected = False

    def active(self, is_active: bool | None = None) -> bool:
        if is_active is not None:
            self._active = bool(is_active)
        return self._active

    def connect(self, ssid: str | None = None, key: str | None = None) -> None:
        if not self._active:
            raise OSError("WiFi Internal Error")  # as the ESP32 port answers on an inactive interface
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def isconnected(self) -> bool:
        return self._connected

    def status(self) -> int:
        return STAT_GOT_IP if self._connected else STAT_IDLE

    def ifconfig(self) -> tuple[str, str, str, str]:
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
