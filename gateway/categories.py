"""Notification categories: the pre-defined action-id sets of the iotpush contract, mapped to a category
name that phone clients register once (iOS lock-screen and banner buttons need a category known in
advance). The envelope carries the name; a message whose actions match no set has category ``None`` and
clients show its buttons only in the app.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["CATEGORIES", "category_for"]

CATEGORIES: Mapping[frozenset[str], str] = {
    frozenset({"ack"}): "ack",
    frozenset({"reply"}): "reply",
    frozenset({"comment"}): "reply",
    frozenset({"ack", "snooze"}): "ack_snooze",
    frozenset({"confirm", "deny"}): "confirm_deny",
    frozenset({"approve", "reject"}): "approve_reject",
    frozenset({"yes", "no"}): "yes_no",
    frozenset({"open", "dismiss"}): "open_dismiss",
    frozenset({"ack", "snooze", "reply"}): "ack_snooze_reply",
    frozenset({"approve", "reject", "comment"}): "approve_reject_comment",
    frozenset({"ack", "escalate", "reply"}): "ack_escalate_reply",
}


def category_for(actions: Iterable[Mapping[str, Any]]) -> str | None:
    """The category of exactly this set of action ids (order does not matter), or ``None``."""
    ids = frozenset(str(action.get("id")) for action in actions)
    return CATEGORIES.get(ids) if ids else None
