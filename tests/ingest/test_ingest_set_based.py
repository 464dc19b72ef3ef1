"""The writer's set-based derived state for charging samples (SQL over a batch's new rows)
gives what the per-row Python it replaced gives: charging sessions and daily aggregates."""

import random
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy.orm import Session

from app.ingest.aggregates import (
    NEW_CHARGING_COLUMNS,
    NEW_CHARGING_DDL,
    NEW_CHARGING_TABLE,
    update_daily_aggregates,
)
from app.ingest.derived import roll_up_new_charging
from app.ingest.partitions import create_partitions, month_start
from app.models import OrgRole
from devices.contract import RecordKind
from tests.fixtures import factories
from tests.fixtures.report_data import GAP_S, midnight_minus, raw_connection
from tests.fixtures.rollup_oracle import roll_up_sessions
from tests.fixtures.rollup_oracle import update_daily_aggregates as oracle_daily_aggregates

Connection = psycopg.Connection[Any]
Row = tuple[Any, ...]

COLUMNS = (
    "battery_serial", "ts", "station_id", "slot", "soc_pct", "voltage_v", "current_a",
    "power_kw", "temp_c_min", "temp_c_max", "energy_kwh",
)  # fmt: skip
INSERT = (
    f"INSERT INTO charging_samples ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join(['%s'] * len(COLUMNS))}) ON CONFLICT DO NOTHING"
)


def fleet_and_connection(
    session: Session, batteries: int
) -> tuple[list[str], list[int], Connection]:
    """Batteries of one OEM, two stations, and the session's connection with the writer's
    table of new charging rows."""
    operator = factories.make_org(session)
    oem = factories.make_org(session, OrgRole.oem)
    pack = factories.make_pack_type(session)
    stations = [factories.make_station(session, operator).id for _ in range(2)]
    serials = [
        factories.make_battery(session, pack, operator, oem=oem).serial for _ in range(batteries)
    ]
    conn = raw_connection(session)
    conn.execute(NEW_CHARGING_DDL)
    return serials, stations, conn


def wandering_samples(serials: list[str], stations: list[int], rng: random.Random) -> list[Row]:
    """Samples that test the edges: gaps just under, at and over the session gap, moves
    between slots and stations within a gap, energy counters that restart, hot and cold
    cells, discharging currents."""
    rows: list[Row] = []
    for serial in serials:
        t = midnight_minus(90)
        station, slot, energy = rng.choice(stations), 1, 0.0
        for _ in range(120):
            t += timedelta(
                seconds=rng.choice([30, 60, 60, 60, GAP_S - 1, GAP_S, GAP_S + 1, 3 * GAP_S, 7])
            )
            if rng.random() < 0.08:
                station, slot = rng.choice(stations), rng.randint(1, 2)
            energy = 0.0 if rng.random() < 0.05 else energy + rng.uniform(0.0, 0.8)
            rows.append(
                (serial, t, station, slot, rng.uniform(5, 99), 520.0, rng.choice([150.0, -20.0]),
                 78.0, rng.choice([20.0, -3.0]), rng.choice([31.0, 46.5]), round(energy, 3))
            )  # fmt: skip
    return rows


def deliveries(rows: list[Row], rng: random.Random) -> list[list[Row]]:
    """Shuffled, in uneven batches, a quarter of the rows twice."""
    out = list(rows) + rng.sample(rows, len(rows) // 4)
    rng.shuffle(out)
    batches, i = [], 0
    while i < len(out):
        n = rng.randint(1, 60)
        batches.append(out[i : i + n])
        i += n
    return batches


def per_row_python(conn: Connection, batch: Sequence[Row]) -> None:
    new = []
    for row in batch:
        got = conn.execute(
            INSERT + " RETURNING battery_serial, ts, station_id, slot, soc_pct, energy_kwh,"
            " temp_c_max",
            row,
        ).fetchone()
        if got is not None:
            new.append(got)
    roll_up_sessions(conn, new, GAP_S)
    oracle_daily_aggregates(conn, {RecordKind.charging: new}, session_gap_s=GAP_S)


def set_based(conn: Connection, batch: Sequence[Row]) -> None:
    for row in batch:
        conn.execute(
            f"WITH new AS ({INSERT} RETURNING {', '.join(NEW_CHARGING_COLUMNS)})"
            f" INSERT INTO {NEW_CHARGING_TABLE} SELECT * FROM new",
            row,
        )
    roll_up_new_charging(conn, GAP_S)
    update_daily_aggregates(conn, {}, new_charging=True, session_gap_s=GAP_S)
    # The writer's commit empties it (ON COMMIT DELETE ROWS); this test never commits.
    conn.execute(f"DELETE FROM {NEW_CHARGING_TABLE}")


def outcome(
    conn: Connection,
    serials: list[str],
    batches: list[list[Row]],
    write: Callable[[Connection, Sequence[Row]], None],
) -> tuple[list[Row], list[Row]]:
    with conn.transaction(force_rollback=True):
        for batch in batches:
            write(conn, batch)
        sessions = conn.execute(
            "SELECT battery_serial, station_id, slot, started_at, ended_at, soc_from_pct,"
            " soc_to_pct, energy_start_kwh, energy_end_kwh, peak_temp_c, sample_count"
            " FROM charging_sessions WHERE battery_serial = ANY(%s) ORDER BY 1, 4",
            (serials,),
        ).fetchall()
        daily = conn.execute(
            "SELECT battery_serial, day, charging_samples, charging_sessions,"
            " energy_charged_kwh, charged_ah, temp_spread_sum_c, seconds_above_45c,"
            " seconds_below_0c, temp_max_c, last_seen_at"
            " FROM battery_daily WHERE battery_serial = ANY(%s) ORDER BY 1, 2",
            (serials,),
        ).fetchall()
    return sessions, daily


def assert_rows_equal(a: list[Row], b: list[Row]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert len(x) == len(y)
        for u, v in zip(x, y, strict=True):
            if isinstance(u, float):
                assert u == pytest.approx(v, rel=1e-9, abs=1e-9), (x, y)
            else:
                assert u == v, (x, y)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_set_based_sessions_and_daily_aggregates_equal_the_per_row_roll_up(
    session: Session, seed: int
) -> None:
    serials, stations, conn = fleet_and_connection(session, batteries=3)
    rng = random.Random(seed)
    rows = wandering_samples(serials, stations, rng)
    create_partitions(conn, "charging_samples", sorted({month_start(r[1]) for r in rows}))
    batches = deliveries(rows, rng)

    expected_sessions, expected_daily = outcome(conn, serials, batches, per_row_python)
    sessions, daily = outcome(conn, serials, batches, set_based)

    assert sum(s[-1] for s in expected_sessions) == len(rows)
    assert len(expected_sessions) > len(serials), "no session was split: nothing was tested"
    assert_rows_equal(sessions, expected_sessions)
    assert_rows_equal(daily, expected_daily)


@pytest.mark.parametrize("seed", [1, 2])
def test_appended_and_late_batches_equal_the_per_row_roll_up(session: Session, seed: int) -> None:
    """Batches that only append (as a station sending in order does), then a late batch:
    battery_daily ends as the per-row roll-up has it."""
    serials, stations, conn = fleet_and_connection(session, batteries=3)
    rng = random.Random(seed)
    rows = sorted({(r[0], r[1]): r for r in wandering_samples(serials, stations, rng)}.values())
    create_partitions(conn, "charging_samples", sorted({month_start(r[1]) for r in rows}))
    # In time order across the fleet, as stations send; then one batch of rows held back.
    in_order = sorted(rows, key=lambda r: r[1])
    late = in_order[40:50]
    on_time = in_order[:40] + in_order[50:]
    batches = [on_time[i : i + 25] for i in range(0, len(on_time), 25)] + [late]

    _, expected_daily = outcome(conn, serials, batches, per_row_python)
    _, daily = outcome(conn, serials, batches, set_based)

    assert_rows_equal(daily, expected_daily)
