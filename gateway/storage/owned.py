"""One rule for the management API's "your row" look-ups: another user's row answers exactly like an
unknown id, so ids of other people's topics, devices and webhooks cannot be probed."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute

from gateway.errors import NotFound

__all__ = ["owned"]

T = TypeVar("T")


async def owned(
    session: Any,
    model: type[T],
    row_id: str,
    owner: InstrumentedAttribute[Any],
    owner_id: str,
    *,
    what: str,
    listing: str,
) -> T:
    """The row of ``model`` with ``row_id`` whose ``owner`` column is ``owner_id``, else ``NotFound``."""
    row = await session.scalar(select(model).where(model.id == row_id, owner == owner_id))  # type: ignore[attr-defined]
    if row is None:
        raise NotFound(
            f"you have no {what} with id {row_id}; GET {listing} lists yours",
            error=f"{what.capitalize()} not found",
        )
    return row  # type: ignore[no-any-return]
