import base64
import binascii
from typing import Annotated, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel

from app.errors import AppError


class InvalidCursor(AppError):
    status = 422
    code = "InvalidCursor"
    title = "Invalid pagination cursor"


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    # Pass as `cursor` to get the next page; null on the last page.
    next_cursor: str | None


def encode_cursor(*values: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[object] | None:
    """Cursors are opaque to clients: the sort key of the last row of the previous page."""
    if cursor is None:
        return None
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("cursor is not one this API issued") from exc
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidCursor("cursor is not one this API issued")
    return values


Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
Cursor = Annotated[
    str | None, Query(description="`next_cursor` of the previous page", max_length=500)
]
