"""Raw telemetry written straight into the record tables inside a test's transaction, and
handed to the ingest's aggregate step as the writer hands them (new rows only: charging
rows in the writer's table of new charging rows, the others as keys)."""

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy.orm import Session

from app import clock
from app.ingest.aggregates import (
    NEW_CHARGING_COLUMNS,
    NEW_CHARGING_DDL,
    NEW_CHARGING_TABLE,
    NewKey,
    update_daily_aggregates,
)
from app.ingest.partitions import create_partitions, month_start
from devices.contract import RecordKind

GAP_S = 600.0

COLUMNS: dict[RecordKind, tuple[str, tuple[str, ...]]] = {
    RecordKind.charging: (
        "charging_samples",
        ("battery_serial", "ts", "station_id", "slot", "soc_pct", "voltage_v", "current_a",
         "power_kw", "temp_c_min", "temp_c_max", "energy_kwh"),
    ),
    RecordKind.vehicle: (
        "vehicle_telemetry",
        ("vin", "ts", "battery_serial", "soc_pct", "odometer_km", "pack_voltage_v",
         "pack_current_a", "temp_c_max"),
    ),
    RecordKind.health: (
        "health_records",
        ("battery_serial", "ts", "station_id", "soh_pct", "internal_resistance_mohm",
         "cell_voltage_min_v", "cell_voltage_max_v", "temp_c_max", "cycle_count"),
    ),
    RecordKind.capacity: (
        "capacity_records",
        ("battery_serial", "ts", "station_id", "capacity_kwh", "capacity_ah", "method", "temp_c"),
    ),
}  # fmt: skip


def raw_connection(session: Session) -> psycopg.Connection[Any]:
    driver = session.connection().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


def ingest(session: Session, kind: RecordKind, rows: Sequence[Sequence[Any]]) -> int:
    """Inserts like the writer (duplicates are no-ops) and aggregates the new rows only."""
    conn = raw_connection(session)
    table, columns = COLUMNS[kind]
    # DDL is transactional: partitions made here go with the test's rollback.
    create_partitions(conn, table, sorted({month_start(row[1]) for row in rows}))
    charging = kind is RecordKind.charging
    returning = ", ".join(NEW_CHARGING_COLUMNS) if charging else "battery_serial, ts"
    new: list[tuple[Any, ...]] = []
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(
                f"INSERT INTO {table} ({', '.join(columns)})"
                f" VALUES ({', '.join(['%s'] * len(columns))})"
                f" ON CONFLICT DO NOTHING RETURNING {returning}",
                list(row),
            )
            got = cur.fetchone()
            if got is not None:
                new.append(got)
        if charging:
            cur.execute(NEW_CHARGING_DDL)
            cur.executemany(
                f"INSERT INTO {NEW_CHARGING_TABLE}"
                f" VALUES ({', '.join(['%s'] * len(NEW_CHARGING_COLUMNS))})",
                new,
            )
    update_daily_aggregates(
        conn,
        {} if charging else {kind: [NewKey(*r) for r in new]},
        new_charging=charging and bool(new),
        session_gap_s=GAP_S,
    )
    if charging:
        # The writer's commit empties it (ON COMMIT DELETE ROWS); a test never commits.
        conn.execute(f"DELETE FROM {NEW_CHARGING_TABLE}")
    return len(new)


def ingest_in_batches(
    session: Session, kind: RecordKind, rows: Sequence[Sequence[Any]], rng: random.Random
) -> None:
    """Shuffled, in uneven batches, with a share of rows delivered twice."""
    deliveries = list(rows) + rng.sample(list(rows), len(rows) // 4)
    rng.shuffle(deliveries)
    i = 0
    while i < len(deliveries):
        n = rng.randint(1, 40)
        ingest(session, kind, deliveries[i : i + n])
        i += n


@dataclass
class ChargingPlan:
    """Charging sessions of one battery: 60 s samples, 0.5 kWh and 150 A per sample."""

    serial: str
    station_id: int
    start: datetime
    sessions: int = 2
    samples_per_session: int = 30
    hot_every: int = 7
    cold_every: int = 11
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def build(self) -> list[tuple[Any, ...]]:
        t = self.start
        n = 0
        for _ in range(self.sessions):
            for i in range(self.samples_per_session):
                n += 1
                hot = 47.0 if n % self.hot_every == 0 else 31.0
                cold = -2.0 if n % self.cold_every == 0 else 20.0
                self.rows.append(
                    (self.serial, t, self.station_id, 1, 40.0 + i, 520.0, 150.0, 78.0,
                     cold, hot, 0.5 * (i + 1))
                )  # fmt: skip
                t += timedelta(seconds=60)
            t += timedelta(seconds=3 * GAP_S)
        return self.rows


def midnight_minus(minutes: int, days_ago: int = 2) -> datetime:
    today = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago, minutes=minutes)
