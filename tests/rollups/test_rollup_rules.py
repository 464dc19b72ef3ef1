"""app/rollups: the rules cover the aggregate tables, and the SQL generated from them gives
what the rules computed row by row in Python (tests/fixtures/rollup_oracle.py) gives."""

import random
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.ingest.aggregates import NewKey
from app.ingest.derived import RETURNED, HealthRow, VehicleRow
from app.ingest.tables import SPECS
from app.models.reports import BatteryDaily, BatteryMonthly
from app.rollups.rules import DAILY, MONTHLY, TELEMETRY
from devices.contract import RecordKind
from tests.fixtures.report_data import COLUMNS, GAP_S, ingest_in_batches, raw_connection
from tests.fixtures.rollup_oracle import update_daily_aggregates as oracle_daily_aggregates
from tests.reports.test_report_aggregates import COMPARED, assert_same, daily, fleet, history


def test_every_aggregate_column_has_exactly_one_rule() -> None:
    daily_columns = {c.name for c in BatteryDaily.__table__.columns} - {"battery_serial", "day"}
    monthly_columns = {c.name for c in BatteryMonthly.__table__.columns} - {
        "battery_serial",
        "month",
    }
    assert [c.name for c in DAILY] == list(dict.fromkeys(c.name for c in DAILY))
    assert {c.name for c in DAILY} == daily_columns
    assert [c.name for c in MONTHLY] == list(dict.fromkeys(c.name for c in MONTHLY))
    assert {c.name for c in MONTHLY} == monthly_columns
    # Every daily column but the swaps' (rolled up from swap_events) comes from the telemetry.
    written = {c for source in TELEMETRY for c in source.written}
    assert daily_columns - written == {"swaps_in", "swaps_out", "health_rejections"}


def oracle_ingest(session: Session, kind: RecordKind, rows: list[Any]) -> None:
    conn = raw_connection(session)
    table, columns = COLUMNS[kind]
    new = []
    for row in rows:
        got = conn.execute(
            f"INSERT INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join(['%s'] * len(columns))})"
            " ON CONFLICT DO NOTHING RETURNING battery_serial, ts",
            list(row),
        ).fetchone()
        if got is not None:
            new.append(got)
    oracle_daily_aggregates(conn, {kind: new}, session_gap_s=GAP_S)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_ingest_statements_equal_the_row_by_row_oracle(session: Session, seed: int) -> None:
    serials, station_id, vin = fleet(session)
    rows = history(serials, station_id, vin)
    rng = random.Random(seed)
    for kind in (RecordKind.health, RecordKind.capacity, RecordKind.charging, RecordKind.vehicle):
        ingest_in_batches(session, kind, rows[kind], rng)
    produced = daily(session, serials)
    assert produced, "nothing was aggregated: nothing was tested"
    session.execute(
        text("DELETE FROM battery_daily WHERE battery_serial = ANY(:s)"), {"s": serials}
    )
    for kind in (RecordKind.health, RecordKind.capacity, RecordKind.charging, RecordKind.vehicle):
        deliveries = list(rows[kind]) + rng.sample(list(rows[kind]), len(rows[kind]) // 4)
        rng.shuffle(deliveries)
        i = 0
        # The same deliveries again into emptied tables, through the oracle.
        session.execute(text(f"DELETE FROM {COLUMNS[kind][0]} WHERE battery_serial = ANY(:s)"),
                        {"s": serials})  # fmt: skip
        while i < len(deliveries):
            n = rng.randint(1, 40)
            oracle_ingest(session, kind, deliveries[i : i + n])
            i += n
    expected = daily(session, serials)
    assert set(COMPARED) >= {"energy_discharged_kwh", "fit_cycles_sxy", "soh_first_pct"}
    assert_same(produced, expected)
    assert any(r["vehicle_samples"] for r in produced.values())
    assert any(r["seconds_above_45c"] for r in produced.values())


def test_the_writers_returning_is_what_the_derived_step_names() -> None:
    """The derived step reads the writer's RETURNING rows by name (derived.RETURNED)."""
    assert SPECS[RecordKind.health].returning == HealthRow._fields
    assert SPECS[RecordKind.vehicle].returning == VehicleRow._fields
    assert SPECS[RecordKind.capacity].returning == NewKey._fields
    assert set(RETURNED) == {kind for kind in SPECS if kind is not RecordKind.charging}
