"""Message and receipt ids: UUIDv7 strings, unique, ordered by the millisecond they were made in."""

from __future__ import annotations

import uuid

from gateway.ids import new_id


def test_ids_are_uuid7_strings_unique_and_time_ordered() -> None:
    ids = [new_id(now_ms=1_700_000_000_000 + n // 100) for n in range(20_000)]  # > one random-byte pool
    assert len(set(ids)) == len(ids)
    for text in ids[::997]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    stamps = [int(uuid.UUID(text).hex[:12], 16) for text in ids]
    assert stamps == sorted(stamps) and stamps[0] == 1_700_000_000_000 and stamps[-1] == 1_700_000_000_199
