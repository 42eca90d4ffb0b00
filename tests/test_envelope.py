"""``iso``, the time format of envelopes and API answers: it keeps the text of the last second formatted,
so a time is right whatever came before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from gateway.envelope import iso


def test_iso_is_right_whatever_was_formatted_before() -> None:
    start = datetime(2026, 12, 31, 23, 59, 58, 999_999, tzinfo=UTC)  # a second, a minute, a year turn
    times = [start + timedelta(microseconds=n * 250_001) for n in range(12)]
    times += [
        start.replace(year=2025),  # the same second of another year
        start.replace(tzinfo=None),  # naive: UTC, as SQLite hands it back
        start.astimezone(timezone(timedelta(hours=-5))),  # another offset: the same instant
        start,
    ]
    for value in [*times, *reversed(times), *times[::3]]:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        assert iso(value) == utc.strftime("%Y-%m-%dT%H:%M:%SZ"), value
    assert iso(start) == "2026-12-31T23:59:58Z"
    assert iso(start + timedelta(microseconds=1)) == "2026-12-31T23:59:59Z"
