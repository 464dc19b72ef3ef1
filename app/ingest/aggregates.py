"""The ingest's step into battery_daily: a batch's new rows through app/rollups' incremental
SELECTs (the rules and the SQL live there), one statement per record kind.

Only new rows feed it, so a redelivered record cannot count twice. The new charging rows,
most of the telemetry, are read where the writer has them (see NEW_CHARGING_RELATIONS); the
few new rows of the other kinds come as keys. A batch of charging rows that only appends to
each battery's history (the common case: a station sends in order) takes the cheaper
statement app/rollups generates for it (`append_select`); any other, the general one.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import psycopg

from app.ingest.tables import SPECS
from app.rollups.daily import (
    append_select,
    incremental_select,
    upsert_statement,
)
from app.rollups.rules import (
    CAPACITY,
    CHARGING,
    CYCLES_LOOKBACK,
    FIT_EPOCH,
    HEALTH,
    VEHICLE,
    RowSource,
)
from devices.contract import RecordKind

Connection = psycopg.Connection[Any]

# What the writer keeps of each newly inserted charging sample for the derived state.
NEW_CHARGING_COLUMNS = (
    "battery_serial",
    "ts",
    "station_id",
    "slot",
    "soc_pct",
    "current_a",
    "energy_kwh",
    "temp_c_min",
    "temp_c_max",
)
NEW_CHARGING_TABLE = "new_charging_samples"
NEW_CHARGING_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {NEW_CHARGING_TABLE} (battery_serial text, ts timestamptz,"
    " station_id int8, slot int4, soc_pct float8, current_a float8, energy_kwh float8,"
    " temp_c_min float8, temp_c_max float8) ON COMMIT DELETE ROWS"
)
# The writer's staging table of charging rows: when every staged row was new, it holds
# exactly the batch's new rows, and is read in place of NEW_CHARGING_TABLE (which the writer
# fills only for a batch of new and duplicate rows).
STAGED_CHARGING_TABLE = SPECS[RecordKind.charging].staging
NEW_CHARGING_RELATIONS = (NEW_CHARGING_TABLE, STAGED_CHARGING_TABLE)


class NewKey(NamedTuple):
    """A newly inserted record of a kind but charging."""

    battery_serial: str
    ts: datetime


_NEW_KEYS = (
    "(SELECT DISTINCT * FROM unnest(%(serials)s::text[], %(ts)s::timestamptz[])"
    " AS n(battery_serial, ts))"
)


def _statement(source: RowSource, new: str) -> str:
    return upsert_statement(source.written, incremental_select(source, new))


class ChargingStatements(NamedTuple):
    # For a batch that only appends to each battery's history; does nothing for another.
    append: str
    general: str


CHARGING_STATEMENTS = {
    new: ChargingStatements(
        upsert_statement(CHARGING.written, append_select(CHARGING, new)),
        _statement(CHARGING, new),
    )
    for new in NEW_CHARGING_RELATIONS
}
_BY_KEYS = {kind: _statement(source, _NEW_KEYS)
            for kind, source in ((RecordKind.vehicle, VEHICLE), (RecordKind.health, HEALTH),
                                 (RecordKind.capacity, CAPACITY))}  # fmt: skip


def update_daily_aggregates(
    conn: Connection,
    new_keys: Mapping[RecordKind, Sequence[NewKey]],
    *,
    new_charging: bool,
    session_gap_s: float,
    new_charging_rows: str = NEW_CHARGING_TABLE,
) -> int:
    """Adds the new rows to battery_daily: those of new_charging_rows (one of
    NEW_CHARGING_RELATIONS) when new_charging, and of the other kinds by their keys. Returns
    the battery-day upserts."""
    gap = {"gap": session_gap_s, "gap_interval": timedelta(seconds=session_gap_s)}
    touched = 0
    for kind, statement in _BY_KEYS.items():
        keys = new_keys.get(kind)
        if not keys:
            continue
        params = {
            **gap,
            "serials": [k.battery_serial for k in keys],
            "ts": [k.ts for k in keys],
            "epoch": FIT_EPOCH,
            "lookback": CYCLES_LOOKBACK,
        }
        touched += conn.execute(statement, params, prepare=True).rowcount
    if new_charging:
        charging = CHARGING_STATEMENTS[new_charging_rows]
        # New rows make at least one battery-day: none means the batch does not only append.
        appended = conn.execute(charging.append, gap, prepare=True).rowcount
        if not appended:
            appended = conn.execute(charging.general, gap, prepare=True).rowcount
        touched += appended
    return touched
