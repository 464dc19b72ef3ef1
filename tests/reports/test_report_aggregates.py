"""battery_daily: maintained per batch from new rows, equal to a rebuild from the raw tables."""

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.models import OrgRole
from app.rollups.rebuild import rebuild_aggregates
from app.rollups.swaps import roll_up_swaps
from devices.contract import RecordKind
from tests.fixtures import factories
from tests.fixtures.factories import auth
from tests.fixtures.report_data import (
    GAP_S,
    ChargingPlan,
    ingest,
    ingest_in_batches,
    midnight_minus,
)
from tests.fixtures.swap_world import build_swap_world

COMPARED = (
    "charging_samples", "charging_sessions", "energy_charged_kwh", "charged_ah",
    "temp_spread_sum_c", "vehicle_samples", "energy_discharged_kwh", "discharged_ah",
    "seconds_above_45c", "seconds_below_0c", "temp_max_c", "health_records", "health_first_ts",
    "soh_first_pct", "resistance_first_mohm", "health_last_ts", "soh_last_pct",
    "resistance_last_mohm", "cycles_last", "soh_min_pct", "soh_max_pct", "cell_imbalance_max_mv",
    "capacity_records", "capacity_sum_ah", "capacity_last_ts", "capacity_last_ah",
    "capacity_last_kwh", "fit_days_sx", "fit_days_sxx", "fit_days_sxy", "fit_days_syy",
    "fit_cycles_n", "fit_cycles_sx", "fit_cycles_sy", "fit_cycles_sxx", "fit_cycles_sxy",
    "fit_cycles_syy", "swaps_in",
    "swaps_out", "health_rejections", "last_seen_at",
)  # fmt: skip


def daily(session: Session, serials: list[str]) -> "Daily":
    rows = session.execute(
        text(f"SELECT battery_serial, day, {', '.join(COMPARED)} FROM battery_daily"
             " WHERE battery_serial = ANY(:s) ORDER BY 1, 2"),
        {"s": serials},
    ).mappings()  # fmt: skip
    return {(r["battery_serial"], r["day"]): dict(r) for r in rows}


Daily = dict[tuple[str, Any], dict[str, Any]]


def assert_same(a: Daily, b: Daily) -> None:
    assert a.keys() == b.keys()
    for key, row in a.items():
        for col in COMPARED:
            x, y = row[col], b[key][col]
            if isinstance(x, float) and isinstance(y, float):
                assert x == pytest.approx(y, rel=1e-9, abs=1e-9), (key, col, x, y)
            else:
                assert x == y, (key, col, x, y)


def fleet(session: Session, batteries: int = 2) -> tuple[list[str], int, str]:
    operator = factories.make_org(session)
    oem = factories.make_org(session, OrgRole.oem)
    pack = factories.make_pack_type(session)
    station = factories.make_station(session, operator)
    model = factories.make_vehicle_model(session, oem, pack)
    vehicle = factories.make_vehicle(session, model)
    serials = [factories.make_battery(session, pack, operator, oem=oem).serial
               for _ in range(batteries)]  # fmt: skip
    return serials, station.id, vehicle.vin


def history(serials: list[str], station_id: int, vin: str) -> dict[RecordKind, list[Any]]:
    """Two batteries over three UTC days, crossing midnight while charging and driving."""
    a, b = serials
    start = midnight_minus(40)
    charging = ChargingPlan(a, station_id, start).build()
    charging += ChargingPlan(b, station_id, start + timedelta(hours=5), sessions=3).build()
    vehicle = []
    t = midnight_minus(15)
    for i in range(50):
        # A stop of two gaps in the middle: the sample after it stands for no time.
        t += timedelta(seconds=30 if i != 25 else 2 * GAP_S)
        vehicle.append((vin, t, b, 60.0 - i * 0.5, 1000.0 + i, 530.0, -120.0 if i % 4 else 15.0,
                        46.0 if i % 9 == 0 else (-1.0 if i % 13 == 0 else 25.0)))  # fmt: skip
    health, capacity = [], []
    for day in range(3):
        for k in range(4):
            ts = start + timedelta(days=day, hours=3 * k + 1)
            for j, serial in enumerate(serials):
                health.append(
                    (
                        serial,
                        ts,
                        station_id,
                        97.0 - day - 0.1 * k - j,
                        20.0 + day + k,
                        3.30,
                        3.31 + 0.001 * (day + k),
                        33.0 + k,
                        100 * day + 10 * k + j,
                    )
                )
                capacity.append((serial, ts + timedelta(seconds=1), station_id,
                                 140.0 - day - 0.2 * k, 275.0 - 2 * day - 0.4 * k - j,
                                 "full_charge", 25.0))  # fmt: skip
    return {
        RecordKind.charging: charging,
        RecordKind.vehicle: vehicle,
        RecordKind.health: health,
        RecordKind.capacity: capacity,
    }


def test_incremental_aggregates_equal_a_rebuild_from_raw_tables(session: Session) -> None:
    serials, station_id, vin = fleet(session)
    rng = random.Random(7)
    data = history(serials, station_id, vin)
    # Health before capacity: capacity records take their cycle count from health records.
    for kind in (RecordKind.health, RecordKind.charging, RecordKind.vehicle, RecordKind.capacity):
        ingest_in_batches(session, kind, data[kind], rng)
    incremental = daily(session, serials)
    assert len(incremental) >= 5

    first = min(day for _, day in incremental)
    last = max(day for _, day in incremental)
    rebuild_aggregates(session, first - timedelta(days=1), last, session_gap_s=GAP_S)
    assert_same(incremental, daily(session, serials))


def test_charging_energy_sessions_and_extreme_hours_follow_the_samples(session: Session) -> None:
    serials, station_id, _ = fleet(session, batteries=1)
    plan = ChargingPlan(serials[0], station_id, midnight_minus(0, days_ago=3) + timedelta(hours=2))
    rows = plan.build()
    rng = random.Random(3)
    ingest_in_batches(session, RecordKind.charging, rows, rng)
    # Redelivering everything changes nothing.
    ingest(session, RecordKind.charging, rows)
    (row,) = daily(session, serials).values()
    assert row["charging_samples"] == 60
    assert row["charging_sessions"] == 2
    # The counter counts from each charge's start: 30 samples of 0.5 kWh per session.
    assert row["energy_charged_kwh"] == pytest.approx(2 * 15.0)
    # Every sample but a session's first stands for 60 s.
    weighted = [i for i in range(1, 61) if (i - 1) % 30 != 0]
    assert row["seconds_above_45c"] == pytest.approx(60.0 * sum(1 for i in weighted if i % 7 == 0))
    assert row["seconds_below_0c"] == pytest.approx(60.0 * sum(1 for i in weighted if i % 11 == 0))
    assert row["charged_ah"] == pytest.approx(150.0 * 58 / 60)
    assert row["temp_max_c"] == 47.0


def test_swaps_reach_the_daily_aggregates_through_the_rollup(
    session: Session, client: TestClient
) -> None:
    world = build_swap_world(session, charged_socs=(95.0,))
    serials = [world.depleted.serial, world.charged[0].serial]
    response = client.post("/v1/swaps", json=world.swap_body(), headers=auth(world.admin_key))
    assert response.status_code == 201, response.text
    assert response.json()["outcome"] == "completed"
    day = datetime.fromisoformat(response.json()["started_at"]).astimezone(UTC).date()
    # The swap's own transaction leaves the aggregates alone; the roll-up adds it.
    assert daily(session, serials) == {}
    roll_up_swaps(session.connection())
    rows = daily(session, serials)
    assert rows[(world.depleted.serial, day)]["swaps_out"] == 1
    assert rows[(world.charged[0].serial, day)]["swaps_in"] == 1
    rebuild_aggregates(session, day, day, session_gap_s=GAP_S)
    assert_same(rows, daily(session, serials))


# ---------------------------------------------------------------- battery_monthly

MONTHLY_SUMMED = (
    "charging_samples", "charging_sessions", "capacity_records", "fit_cycles_n", "swaps_in",
    "swaps_out", "health_rejections", "health_records", "energy_charged_kwh", "charged_ah",
    "temp_spread_sum_c", "energy_discharged_kwh", "discharged_ah", "seconds_above_45c",
    "seconds_below_0c", "capacity_sum_ah", "fit_days_sx", "fit_days_sxx", "fit_days_sxy",
    "fit_cycles_sx", "fit_cycles_sy", "fit_cycles_sxx", "fit_cycles_sxy", "fit_days_syy",
    "fit_cycles_syy",
)  # fmt: skip
MONTHLY_COMPARED = (
    "days", *MONTHLY_SUMMED, "imbalance_n", "imbalance_sx", "imbalance_sy", "imbalance_sxx",
    "imbalance_sxy", "temp_max_c", "last_seen_at", "first_day",
)  # fmt: skip


def monthly(session: Session, serials: list[str]) -> Daily:
    rows = session.execute(
        text(f"SELECT battery_serial, month, {', '.join(MONTHLY_COMPARED)} FROM battery_monthly"
             " WHERE battery_serial = ANY(:s) ORDER BY 1, 2"),
        {"s": serials},
    ).mappings()  # fmt: skip
    return {(r["battery_serial"], r["month"]): dict(r) for r in rows}


def monthly_from_daily(session: Session, serials: list[str]) -> Daily:
    """battery_monthly as it should be, summed here from battery_daily."""
    rows = session.execute(
        text("SELECT * FROM battery_daily WHERE battery_serial = ANY(:s) ORDER BY 1, 2"),
        {"s": serials},
    ).mappings()
    out: Daily = {}
    for r in rows:
        key = (r["battery_serial"], r["day"].replace(day=1))
        m = out.setdefault(key, dict.fromkeys(MONTHLY_COMPARED, 0))
        m.update(temp_max_c=m["temp_max_c"] or None, last_seen_at=m["last_seen_at"] or None)
        m["first_day"] = min(m["first_day"] or r["day"], r["day"])
        m["days"] += 1
        for col in MONTHLY_SUMMED:
            m[col] += r[col]
        if r["cell_imbalance_max_mv"] is not None:
            x = float((r["day"] - r["day"].replace(year=2020, month=1, day=1)).days)
            y = r["cell_imbalance_max_mv"]
            m["imbalance_n"] += 1
            m["imbalance_sx"] += x
            m["imbalance_sy"] += y
            m["imbalance_sxx"] += x * x
            m["imbalance_sxy"] += x * y
        for col in ("temp_max_c", "last_seen_at"):
            if r[col] is not None:
                m[col] = r[col] if m[col] is None else max(m[col], r[col])
    return out


def assert_same_monthly(a: Daily, b: Daily) -> None:
    assert a.keys() == b.keys()
    for key, row in a.items():
        for col in MONTHLY_COMPARED:
            x, y = row[col], b[key][col]
            if isinstance(x, float) or isinstance(y, float):
                assert x == pytest.approx(y, rel=1e-9, abs=1e-6), (key, col, x, y)
            else:
                assert x == y, (key, col, x, y)


def test_monthly_rollup_follows_the_daily_rows_through_ingest_and_rebuild(
    session: Session,
) -> None:
    serials, station_id, vin = fleet(session)
    rng = random.Random(11)
    data = history(serials, station_id, vin)
    for kind in (RecordKind.health, RecordKind.charging, RecordKind.vehicle, RecordKind.capacity):
        ingest_in_batches(session, kind, data[kind], rng)
    incremental = monthly(session, serials)
    assert incremental, "the triggers wrote no monthly rows"
    assert sum(r["days"] for r in incremental.values()) == len(daily(session, serials))
    assert_same_monthly(incremental, monthly_from_daily(session, serials))

    days = [day for _, day in daily(session, serials)]
    rebuild_aggregates(session, min(days) - timedelta(days=1), max(days), session_gap_s=GAP_S)
    assert_same_monthly(incremental, monthly(session, serials))


def test_swaps_reach_the_monthly_rollup(session: Session, client: TestClient) -> None:
    world = build_swap_world(session, charged_socs=(95.0,))
    serials = [world.depleted.serial, world.charged[0].serial]
    response = client.post("/v1/swaps", json=world.swap_body(), headers=auth(world.admin_key))
    assert response.status_code == 201, response.text
    day = datetime.fromisoformat(response.json()["started_at"]).astimezone(UTC).date()
    roll_up_swaps(session.connection())
    rows = monthly(session, serials)
    assert rows[(world.depleted.serial, day.replace(day=1))]["swaps_out"] == 1
    assert rows[(world.charged[0].serial, day.replace(day=1))]["swaps_in"] == 1
    assert_same_monthly(rows, monthly_from_daily(session, serials))
