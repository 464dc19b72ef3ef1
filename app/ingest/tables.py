"""The record tables the ingest writes, generated from their ORM models (app/models/telemetry.py).

A record's row holds the model's columns in the model's order: the fields the contract's
record has under the same names, the topic's station or vehicle (its owner), the record's
extra fields and when it was received. Rows are named tuples of those columns: the ingest
reads them by name; the binary COPY takes them as they are.
"""

from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

from pydantic import BaseModel
from sqlalchemy import BigInteger, DateTime, Double, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from app.core.db import Base
from app.models import telemetry
from devices.contract import RECORD_MODELS, RecordKind

# The type names binary COPY encodes each column's values for (psycopg's set_types).
_COPY_TYPES: dict[type[TypeEngine[Any]], str] = {
    String: "text",  # Text and String(n) alike
    DateTime: "timestamptz",
    BigInteger: "int8",
    Integer: "int4",
    Double: "float8",
    JSONB: "jsonb",
}
# Columns that are not fields of the record: the owner's, and these two.
EXTRA, RECEIVED_AT = "extra", "received_at"


def copy_type(column_type: TypeEngine[Any]) -> str:
    for cls in type(column_type).__mro__:  # BigInteger before Integer, Text as String
        if cls in _COPY_TYPES:
            return _COPY_TYPES[cls]
    raise TypeError(f"no binary COPY type for {column_type!r}")


def _fields(names: tuple[str, ...]) -> Callable[[BaseModel], tuple[Any, ...]]:
    if not names:
        return lambda record: ()
    if len(names) == 1:
        get = attrgetter(names[0])
        return lambda record: (get(record),)
    return attrgetter(*names)


@dataclass(frozen=True)
class TableSpec:
    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    # The column that holds the topic's station id or vin.
    owner: str
    # The natural key (the primary key), which deduplicates redeliveries.
    key: tuple[str, ...]
    # The columns of the new rows the derived state reads (app/ingest/derived.py), in the
    # order it reads them.
    returning: tuple[str, ...]
    # A named tuple of `columns`, and its natural key (for sorting).
    row: Any
    natural_key: Callable[[Any], tuple[Any, ...]]
    _head: Callable[[BaseModel], tuple[Any, ...]]
    _tail: Callable[[BaseModel], tuple[Any, ...]]

    @property
    def staging(self) -> str:
        """The writer's temporary table the batch's rows are copied into first."""
        return f"stage_{self.table}"

    def make_row(self, record: BaseModel, owner: int | str, received_at: datetime) -> Any:
        """The record's row: its fields around its owner, then extra fields and arrival."""
        return self.row(
            *self._head(record),
            owner,
            *self._tail(record),
            record.__pydantic_extra__ or None,
            received_at,
        )


def table_spec(
    kind: RecordKind, model: type[Base], *, owner: str, returning: tuple[str, ...]
) -> TableSpec:
    table = Base.metadata.tables[model.__tablename__]
    columns = tuple(column.name for column in table.columns)
    # Fixed by the contract: the rows end with these two (make_row puts them there).
    if columns[-2:] != (EXTRA, RECEIVED_AT):
        raise TypeError(f"{table.name}: the last columns must be {EXTRA}, {RECEIVED_AT}")
    split = columns.index(owner)
    head, tail = columns[:split], columns[split + 1 : -2]
    record_fields = RECORD_MODELS[kind].model_fields
    missing = [name for name in (*head, *tail) if name not in record_fields]
    if missing:
        raise TypeError(f"{table.name}: columns {missing} are not fields of a {kind} record")
    key = tuple(column.name for column in table.primary_key.columns)
    return TableSpec(
        table=table.name,
        columns=columns,
        types=tuple(copy_type(column.type) for column in table.columns),
        owner=owner,
        key=key,
        returning=returning,
        row=namedtuple(f"{model.__name__}Row", columns),
        natural_key=attrgetter(*key),
        _head=_fields(head),
        _tail=_fields(tail),
    )


SPECS: dict[RecordKind, TableSpec] = {
    RecordKind.charging: table_spec(
        RecordKind.charging,
        telemetry.ChargingSample,
        owner="station_id",
        returning=(
            "battery_serial",
            "ts",
            "station_id",
            "slot",
            "soc_pct",
            "energy_kwh",
            "temp_c_max",
        ),
    ),  # fmt: skip
    RecordKind.health: table_spec(
        RecordKind.health,
        telemetry.HealthRecord,
        owner="station_id",
        returning=("battery_serial", "ts", "soh_pct", "cycle_count"),
    ),
    RecordKind.capacity: table_spec(
        RecordKind.capacity,
        telemetry.CapacityRecord,
        owner="station_id",
        returning=("battery_serial", "ts"),
    ),
    RecordKind.vehicle: table_spec(
        RecordKind.vehicle,
        telemetry.VehicleTelemetry,
        owner="vin",
        returning=("battery_serial", "ts", "soc_pct"),
    ),
}
