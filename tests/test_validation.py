"""Validation of the one request type, at the cheapest level: no server, just the core function."""

from __future__ import annotations

import pytest

from gateway.config import LimitsConfig
from gateway.errors import PayloadTooLarge, ValidationError
from gateway.request import PushRequest
from gateway.validation import parse_priority, pushover_priority, validate

LIMITS = LimitsConfig()


def request(**fields: object) -> PushRequest:
    fields.setdefault("message", "hello")
    return PushRequest(topic="t", source="test", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "normal"),
        ("", "normal"),
        ("HIGH", "high"),
        ("min", "lowest"),
        ("max", "urgent"),
        ("default", "normal"),
        ("emergency", "urgent"),
        (1, "lowest"),
        ("2", "low"),
        (3, "normal"),
        (4, "high"),
        ("5", "urgent"),
        (-2, "lowest"),
        ("-1", "low"),
        (0, "normal"),
    ],
)
def test_priority_names_and_aliases(given: object, expected: str) -> None:
    assert parse_priority(given) == expected


@pytest.mark.parametrize("given", ["loud", 6, -3, True, 2.5, ["high"]])
def test_bad_priority_names_the_field(given: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_priority(given)
    assert info.value.field == "priority"


def test_pushover_scale() -> None:
    assert [pushover_priority(p) for p in range(-2, 3)] == ["lowest", "low", "normal", "high", "urgent"]


def test_limits_are_the_configured_ones() -> None:
    assert validate(request(title="t" * 250), LIMITS).title == "t" * 250
    with pytest.raises(ValidationError, match="251 characters; the limit is 250"):
        validate(request(title="t" * 251), LIMITS)
    # 4096 bytes, counted as UTF-8: 2048 two-byte characters fit, one more does not
    assert validate(request(message="é" * 2048), LIMITS).message == "é" * 2048
    with pytest.raises(PayloadTooLarge, match="4098 bytes; the limit is 4096"):
        validate(request(message="é" * 2049), LIMITS)
    small = LimitsConfig(message_max_bytes=10)
    with pytest.raises(PayloadTooLarge):
        validate(request(message="x" * 11), small)


def test_tags_from_a_comma_string_or_a_list() -> None:
    assert validate(request(tags=" a, b,,c "), LIMITS).tags == ["a", "b", "c"]
    assert validate(request(tags=["x", "y"]), LIMITS).tags == ["x", "y"]
    with pytest.raises(ValidationError, match="11 tags given"):
        validate(request(tags=",".join("t" * 11)), LIMITS)


@pytest.mark.parametrize("url", ["ftp://x/y", "javascript:alert(1)", "https://", "example.com/x"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate(request(click_url=url), LIMITS)
    assert info.value.field == "click_url"


def test_actions_are_checked() -> None:
    valid = validate(
        request(
            actions=[
                {"id": "approve", "label": "Approve", "type": "button"},
                {"id": "reject", "label": "Reject", "type": "button", "destructive": True},
                {"id": "open", "label": "Open", "type": "url", "url": "https://example.com"},
            ]
        ),
        LIMITS,
    )
    assert [a["id"] for a in valid.actions] == ["approve", "reject", "open"]
    assert valid.actions[1]["destructive"] is True
    cases = [
        ([{"id": "a", "label": "A"}] * 4, "actions"),
        ([{"label": "A", "type": "button"}], "actions[0].id"),
        ([{"id": "a", "label": "A"}, {"id": "a", "label": "B"}], "actions[1].id"),
        ([{"id": "open", "label": "Open", "type": "url"}], "actions[0].url"),
        ([{"id": "a", "label": "A", "destructive": "yes"}], "actions[0].destructive"),
        ({"id": "a"}, "actions"),
    ]
    for actions, field in cases:
        with pytest.raises(ValidationError) as info:
            validate(request(actions=actions), LIMITS)
        assert info.value.field == field, actions


def test_ttl_must_be_positive_seconds() -> None:
    assert validate(request(ttl="60"), LIMITS).ttl == 60
    for bad in (0, -5, "soon", True):
        with pytest.raises(ValidationError) as info:
            validate(request(ttl=bad), LIMITS)
        assert info.value.field == "ttl"


# Every field given, each with a value of its own: validation (and the stored row) keep each in its place.
EVERY_FIELD = {
    "title": "Front door",
    "message": "Door left open",
    "priority": "high",
    "tags": ["door", "alarm"],
    "click_url": "https://example.org/click",
    "icon_url": "https://example.org/icon.png",
    "image_url": "https://example.org/image.jpg",
    "actions": [{"id": "close", "label": "Close", "type": "button"}],
    "callback_url": "https://example.org/callback",
    "sound": "siren",
    "ttl": 600,
}


def test_every_field_given_lands_in_its_own_place() -> None:
    """``validate`` builds its result positionally (for speed): no two fields may trade places."""
    valid = validate(request(**EVERY_FIELD), LIMITS)
    assert {name: getattr(valid, name) for name in EVERY_FIELD} == EVERY_FIELD
