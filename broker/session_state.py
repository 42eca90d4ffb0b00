"""A session's connection state without a ``transitions.Machine`` per session.

amqtt 0.12.1 builds a ``transitions.Machine`` for every ``Session`` (about 15 KiB each, a third of an idle
connection's memory) to move between three states. This object answers the same calls amqtt and pushgate
make on ``session.transitions`` (``state``, ``connect()``, ``disconnect()``, ``is_connected()``), keeps
the same rules (``connect`` is refused while connected, which upstream's take-over logic relies on) and
runs the session's own enter hooks, which stamp ``last_connect_time``/``last_disconnect_time`` for
session expiry.
"""

from __future__ import annotations

from amqtt.session import Session
from transitions import MachineError

__all__ = ["SessionState"]


class SessionState:
    __slots__ = ("_session", "state")

    def __init__(self, session: Session, state: str = "new") -> None:
        self._session = session
        self.state = state

    def connect(self) -> None:
        if self.state == "connected":
            raise MachineError(f"session {self._session.client_id} is already connected")
        self.state = "connected"
        self._session._on_enter_connected()

    def disconnect(self) -> None:
        self.state = "disconnected"
        self._session._on_enter_disconnected()

    def is_connected(self) -> bool:
        return self.state == "connected"

    def is_disconnected(self) -> bool:
        return self.state == "disconnected"

    def is_new(self) -> bool:
        return self.state == "new"
