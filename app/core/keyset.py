"""Keyset pagination on one unique column (a natural key), shared by the list routes; the
page itself is pagination.page_of, as for every list."""

from typing import Any, TypeVar

from pydantic import TypeAdapter
from sqlalchemy import Row, Select
from sqlalchemy.orm import InstrumentedAttribute

from app.core.pagination import CursorInt, CursorText, decode_cursor

# Statements and rows of any shape (SQLAlchemy 2.1 types them by their column tuple).
AnySelect = Select[*tuple[Any, ...]]
AnyRow = Row[*tuple[Any, ...]]
KeyT = TypeVar("KeyT", str, int)
_KEY_SHAPES: dict[type, TypeAdapter[tuple[str | int]]] = {
    str: TypeAdapter(tuple[CursorText]),
    int: TypeAdapter(tuple[CursorInt]),
}


def after_cursor(
    statement: AnySelect,
    column: InstrumentedAttribute[KeyT],
    cursor: str | None,
    limit: int,
    key_type: type[KeyT] = str,  # type: ignore[assignment]
) -> AnySelect:
    """Rows strictly after the cursor's key, in key order, one extra to know if more follow."""
    values = decode_cursor(cursor, _KEY_SHAPES[key_type])
    if values is not None:
        statement = statement.where(column > values[0])
    return statement.order_by(column).limit(limit + 1)
