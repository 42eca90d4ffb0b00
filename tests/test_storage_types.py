"""The storage layer's own column processing writes exactly what SQLAlchemy's would."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite

from gateway.storage.database import to_json
from gateway.storage.models import UtcDateTime


def test_utc_datetime_writes_sqlalchemys_sqlite_text_also_for_repeated_values() -> None:
    dialect = sqlite.dialect()
    stock = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    ours = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert stock is not None and ours is not None
    now = datetime.now(UTC)
    values = [
        now,
        now,  # the same object again: the kept text
        now + timedelta(microseconds=1),
        datetime(2026, 1, 2, 3, 4, 5),  # naive, no microseconds
        datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=2))),
        None,
        date(2026, 1, 1),
        now,
        datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # a year of three digits: padded
        datetime(2026, 6, 1, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),  # midnight, an offset
        now.replace(microsecond=0),  # no microseconds: still six digits
        # the second's text is kept: the same second again, then ones that differ in a single field
        datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 2, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 5, 5, 3, tzinfo=UTC),
        datetime(2027, 1, 2, 3, 5, 5, 4, tzinfo=UTC),
        datetime(2027, 2, 2, 3, 5, 5, 5, tzinfo=UTC),
        datetime(2027, 2, 3, 3, 5, 5, 6, tzinfo=UTC),
        datetime(2027, 2, 3, 4, 5, 5, 7, tzinfo=UTC),
        datetime(2027, 2, 3, 4, 5, 6, 8, tzinfo=UTC),
    ]
    assert [ours(v) for v in values] == [stock(v) for v in values]
    assert ours(now) == now.strftime("%Y-%m-%d %H:%M:%S.%f")


def test_json_columns_are_serialised_as_json_dumps_does() -> None:
    for value in ([], {}, ["door", "alarm"], [{"id": "approve", "label": "Approve"}], {"a": [1, None]}):
        assert to_json(value) == json.dumps(value)
