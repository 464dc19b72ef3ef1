"""The ingest's step into battery_daily: a batch's new rows through app/rollups' incremental
SELECTs (the rules and the SQL live there), one statement per record kind.

Only new rows feed it, so a redelivered record cannot count twice. The new charging rows,
most of the telemetry, wait in a temporary table the writer fills from its staging table or
from INSERT ... RETURNING; the few new rows of the other kinds come as keys.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import psycopg

from app.rollups.daily import incremental_select, upsert_statement
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


_CHARGING = _statement(CHARGING, NEW_CHARGING_TABLE)
_BY_KEYS = {kind: _statement(source, _NEW_KEYS)
            for kind, source in ((RecordKind.vehicle, VEHICLE), (RecordKind.health, HEALTH),
                                 (RecordKind.capacity, CAPACITY))}  # fmt: skip


def update_daily_aggregates(
    conn: Connection,
    new_keys: Mapping[RecordKind, Sequence[NewKey]],
    *,
    new_charging: bool,
    session_gap_s: float,
) -> int:
    """Adds the new rows to battery_daily: those of NEW_CHARGING_TABLE when new_charging, and
    of the other kinds by their keys. Returns the battery-day upserts."""
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
        touched += conn.execute(_CHARGING, gap, prepare=True).rowcount
    return touched
