from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, DateTime, Enum, func
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock


def utcnow() -> datetime:
    return clock.now()


def pg_enum(enum_cls: type[StrEnum], name: str) -> Enum:
    """A native PostgreSQL enum stored by value, so the database and the API spell it alike."""
    return Enum(enum_cls, name=name, values_callable=lambda e: [m.value for m in e])


def id_column() -> Mapped[int]:
    return mapped_column(BigInteger, primary_key=True, autoincrement=True)


def created_at_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def updated_at_column() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=utcnow, nullable=False
    )


JSONDict = dict[str, Any]
