import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, TypeAdapter, ValidationError

from app.core.errors import AppError


class InvalidCursor(AppError):
    status = 422
    code = "InvalidCursor"
    title = "Invalid pagination cursor"


ItemT = TypeVar("ItemT")
CursorT = TypeVar("CursorT")


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    # Pass as `cursor` to get the next page; null on the last page.
    next_cursor: str | None


def _in_utc(value: datetime) -> datetime:
    # An aware time near year 1 or 9999 with an offset has no UTC datetime in Python.
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("time out of range") from exc


# The types a cursor's values may have, each bounded to what its column holds. A cursor is
# decoded by a TypeAdapter of a tuple of these, so a value of any other type or range is a 422
# before it reaches a query (a JSON `true` is not an id, 10**30 is not a bigint).
CursorText = Annotated[str, Field(min_length=1, max_length=200)]
CursorInt = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
CursorTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


def encode_cursor(*values: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


RowT = TypeVar("RowT")


def page_of(
    rows: Sequence[RowT],
    limit: int,
    *,
    read: Callable[[RowT], ItemT],
    key: Callable[[RowT], tuple[object, ...]],
) -> Page[ItemT]:
    """The one way a list route pages: its query fetches up to limit + 1 rows in cursor order
    (the extra one only says that more follow), and the cursor is the sort key of the last
    row shown, as decode_cursor reads it back."""
    items = [read(row) for row in rows[:limit]]
    next_cursor = encode_cursor(*key(rows[limit - 1])) if len(rows) > limit else None
    return Page[ItemT](items=items, next_cursor=next_cursor)


def decode_cursor(cursor: str | None, shape: TypeAdapter[CursorT]) -> CursorT | None:
    """Cursors are opaque to clients: the sort key of the last row of the previous page,
    decoded into `shape` (a tuple of the Cursor* types above) or refused."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        # Strict: JSON true is no int, 1.0 no int, "1" no int; times stay ISO strings.
        return shape.validate_json(raw, strict=True)
    except (binascii.Error, ValueError, ValidationError) as exc:
        raise InvalidCursor("cursor is not one this API issued") from exc


Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
Cursor = Annotated[
    str | None, Query(description="`next_cursor` of the previous page", max_length=500)
]
