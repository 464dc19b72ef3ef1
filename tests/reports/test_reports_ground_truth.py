"""The OEM reports against a simulated fleet whose true state the simulator knows.

A small fleet (3 stations, 40 batteries, 8 simulated months, a share of planted faults) runs
in memory. Its records go through the real ingest path: each message is decoded and
validated by app.ingest.payloads.decode_message and written by app.ingest.writer.BatchWriter,
which copies them into the raw tables and updates battery_daily incrementally (no rebuild).
The fleet's organizations, pack types, stations, vehicles and batteries are registered
through the REST API (simulators.backend.RestFleetRegistrar), committed, in a database of
this module's own that is dropped afterwards: the writer works on its own connection and
needs committed registry rows. Batteries are registered in the warehouse, which the ingest
accepts from any station or vehicle, because the swaps of the simulated months are not
replayed into the custody core here (tests/simulators/test_simulators_backend.py covers that).

Ground truth: the truth rows the fleet writes at each capacity measurement (true capacity,
true equivalent full cycles, same instant), fitted the way the report fits the measured
records. The report sees only the measurements (0.4 % noise, whole-number cycle counts), so
its fit must come within 10 % of the fit of the truth.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.auth.service import create_key
from app.batteries.custody import relocate
from app.core import clock
from app.core.config import get_settings, normalize_database_url
from app.core.migrate import upgrade
from app.ingest.payloads import DecodedMessage, decode_message
from app.ingest.writer import BatchWriter
from app.main import create_app
from app.models import (
    Battery,
    CustodyCause,
    KeyRole,
    LocationKind,
    Slot,
    Station,
    Vehicle,
)
from app.reports.service import refresh_recommendations
from devices.contract import MAX_RECORDS_PER_MESSAGE, RecordKind, station_topic, vehicle_topic
from simulators.backend import RestFleetRegistrar
from simulators.battery import FaultMode
from simulators.fleet import Fleet, FleetConfig
from simulators.sinks import InMemorySink
from tests.conftest import ADMIN_URL, TEST_DB, override_units, recreate_database
from tests.fixtures.factories import auth

GT_DB = f"{TEST_DB}_gt"
GT_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + GT_DB
DAYS = 240
TOLERANCE = 0.10
# Fewer points than this, or fewer cycles in the window, leave any fit at the mercy of the
# measurement noise: such batteries are counted but not held to 10 %.
MIN_CAPACITY_RECORDS = 20
MIN_WINDOW_CYCLES = 10.0
# The fault kinds the report must name for each planted fault.
EXPECTED_KIND = {
    FaultMode.fast_fade: "fast_fade",
    FaultMode.hot_cell: "hot_cell",
    FaultMode.cell_imbalance: "cell_imbalance",
}
BATCH_RECORDS = 10_000

# The module's world (a 40-day fleet simulated, its custody recorded, its telemetry written)
# takes 3-4 minutes alone on the shared 2-core machine, and more beside a parallel suite:
# beyond the suite's default 300 s.
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


def fleet_config() -> FleetConfig:
    today = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return FleetConfig(
        stations=3,
        vehicles=22,
        slots_per_station=7,
        days=float(DAYS),
        seed=5,
        start=today - timedelta(days=DAYS + 1),
        code_prefix="gt5",
        faulty_share=0.12,
        # Coarser steps keep the run short; the ageing laws do not depend on them.
        charge_step_s=300,
        telemetry_interval_s=900,
        # Every completed charge reports the capacity it counted.
        capacity_max_start_soc_pct=100.0,
        initial_age_days_max=365.0,
    )


@dataclass
class World:
    fleet: Fleet
    sink: InMemorySink
    client: TestClient
    factory: sessionmaker[Session]
    day_from: date
    day_to: date
    rows: dict[str, dict[str, Any]]
    summary: dict[str, Any]


def messages_of(sink: InMemorySink) -> list[tuple[str, RecordKind, list[dict[str, Any]]]]:
    """The sink's records regrouped into messages (consecutive records of one station or
    vehicle, at most the contract's limit), oldest first so that a capacity record's health
    record is stored before or with it, as in the field."""
    out: list[tuple[str, RecordKind, list[dict[str, Any]]]] = []
    for kind in (RecordKind.health, RecordKind.capacity, RecordKind.charging, RecordKind.vehicle):
        current: tuple[str, list[dict[str, Any]]] | None = None
        for identity, record in sink.records[kind]:
            if current is None or current[0] != identity or len(current[1]) >= 200:
                current = (identity, [])
                out.append((identity, kind, current[1]))
            current[1].append(record)
    assert all(len(records) <= MAX_RECORDS_PER_MESSAGE for _, _, records in out)
    out.sort(key=lambda m: m[2][0]["ts"])
    return out


def feed(sink: InMemorySink) -> dict[str, int]:
    settings = get_settings()
    writer = BatchWriter(GT_URL, settings)
    stored: dict[str, int] = defaultdict(int)
    received_at = clock.now()
    batch: list[DecodedMessage] = []
    size = 0

    def flush() -> None:
        result = writer.write(batch)
        assert not result.dead_letters, result.dead_letters[:3]
        for kind, n in result.stored.items():
            stored[kind.value] += n
        batch.clear()

    try:
        for identity, kind, records in messages_of(sink):
            topic = (
                vehicle_topic(identity)
                if kind is RecordKind.vehicle
                else station_topic(identity, kind)
            )
            message = decode_message(
                topic,
                orjson.dumps({"records": records}),
                settings=settings,
                received_at=received_at,
            )
            assert not message.dead_letters, message.dead_letters[:3]
            batch.append(message)
            size += len(records)
            if size >= BATCH_RECORDS:
                flush()
                size = 0
        if batch:
            flush()
    finally:
        writer.close()
    return stored


def record_swaps_as_custody(session: Session, sink: InMemorySink) -> None:
    batteries = {b.serial: b for b in session.scalars(select(Battery))}
    vehicles = {v.vin: v.id for v in session.scalars(select(Vehicle))}
    slots = {
        (code, number): slot_id
        for code, number, slot_id in session.execute(
            select(Station.code, Slot.number, Slot.id).join(Slot, Slot.station_id == Station.id)
        )
    }
    accepted = [(request, result) for request, result in sink.swaps if result.accepted]
    for request, result in sorted(accepted, key=lambda pair: pair[0].finished_at):
        at = datetime.fromisoformat(request.finished_at)
        removed = batteries[request.removed_battery_serial]
        installed = batteries[result.installed_battery_serial or request.proposed_battery_serial]
        # Through in_transit: the slot the removed battery goes to may be the one the
        # installed battery leaves, and a vehicle carries one battery.
        relocate(session, removed, kind=LocationKind.in_transit, cause=CustodyCause.swap, at=at)
        relocate(
            session, installed, kind=LocationKind.vehicle, cause=CustodyCause.swap,
            vehicle_id=vehicles[request.vin], at=at,
        )  # fmt: skip
        relocate(
            session, removed, kind=LocationKind.slot, cause=CustodyCause.swap,
            slot_id=slots[(request.station_code, request.removed_to_slot)], at=at,
        )  # fmt: skip
        session.flush()


def report_rows(client: TestClient, window: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {**window, "limit": 100}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get("/v1/reports/batteries", params=params)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    get_settings.cache_clear()
    recreate_database(GT_DB)
    upgrade(GT_URL)
    engine = create_engine(normalize_database_url(GT_URL))
    factory = sessionmaker(bind=engine, expire_on_commit=False)

    def gt_unit_of_work() -> Iterator[Session]:
        with factory.begin() as session:
            yield session

    app = create_app()
    override_units(app, gt_unit_of_work, gt_unit_of_work)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            with factory.begin() as session:
                _, key = create_key(session, role=KeyRole.admin, organization_code=None)
            client.headers.update(auth(key))

            config = fleet_config()
            sink = InMemorySink()
            fleet = Fleet(config, sink, swap_recorder=sink, truth=sink)
            RestFleetRegistrar(client).register(fleet.manifest)
            fleet.run()
            # The ingest takes a station's records only for batteries in its slots and a
            # vehicle's for the battery it carried (issue 11): the custody history follows
            # the simulated swaps, as the backend's swap endpoint would have recorded them.
            with factory.begin() as session:
                record_swaps_as_custody(session, sink)
            stored = feed(sink)
            assert stored["capacity"] == sink.record_counts[RecordKind.capacity]

            day_from = config.start.date()
            day_to = (config.start + timedelta(days=DAYS)).date()
            window = {"from": day_from.isoformat(), "to": day_to.isoformat()}
            items = report_rows(client, window)
            summary = client.get("/v1/reports/fleet-summary", params=window)
            assert summary.status_code == 200, summary.text
            yield World(
                fleet=fleet,
                sink=sink,
                client=client,
                factory=factory,
                day_from=day_from,
                day_to=day_to,
                rows={r["serial"]: r for r in items},
                summary=summary.json(),
            )
    finally:
        engine.dispose()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (GT_DB,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{GT_DB}"')


# ---------------------------------------------------------------- ground truth


def days_of(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() / 86400.0


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


@dataclass(frozen=True)
class Truth:
    points: int
    window_cycles: float
    fade_pct_per_year: float
    fade_pct_per_1000_cycles: float
    soh_start_pct: float
    soh_end_pct: float


def truths(world: World) -> dict[str, Truth]:
    nominal = {b.serial: b.spec.nominal_capacity_ah for b in world.fleet.batteries}
    measured: dict[str, list[dict[str, Any]]] = defaultdict(list)
    snapshots: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in world.sink.truth:
        if row["event"] == "capacity_measured":
            measured[row["battery_serial"]].append(row)
        elif row["event"] == "snapshot":
            snapshots[row["battery_serial"]].append(row)
    out: dict[str, Truth] = {}
    for serial, rows in measured.items():
        if len(rows) < 3:
            continue
        ah = [r["capacity_ah"] for r in rows]
        per_day = slope([days_of(r["ts"]) for r in rows], ah)
        per_cycle = slope([r["equivalent_full_cycles"] for r in rows], ah)
        snaps = snapshots[serial]
        out[serial] = Truth(
            points=len(rows),
            window_cycles=snaps[-1]["equivalent_full_cycles"] - snaps[0]["equivalent_full_cycles"],
            fade_pct_per_year=-per_day / nominal[serial] * 100.0 * 365.25,
            fade_pct_per_1000_cycles=-per_cycle / nominal[serial] * 100.0 * 1000.0,
            soh_start_pct=snaps[0]["soh_pct"],
            soh_end_pct=snaps[-1]["soh_pct"],
        )
    return out


def fitted(world: World) -> dict[str, Truth]:
    """The batteries with enough evidence for a fit to be held to 10 %."""
    return {
        serial: truth
        for serial, truth in truths(world).items()
        if truth.points >= MIN_CAPACITY_RECORDS and truth.window_cycles >= MIN_WINDOW_CYCLES
    }


def relative_error(reported: float | None, true: float) -> float:
    assert reported is not None
    return abs(reported / true - 1.0)


# ---------------------------------------------------------------- tests


def test_most_batteries_have_enough_measurements_to_judge_the_fit(world: World) -> None:
    assert len(world.rows) == len(world.fleet.batteries)
    assert len(fitted(world)) >= 0.75 * len(world.fleet.batteries)


def test_fade_rate_per_year_agrees_with_the_simulators_truth(world: World) -> None:
    errors = {
        serial: relative_error(world.rows[serial]["capacity_fade_pct_per_year"],
                               truth.fade_pct_per_year)
        for serial, truth in fitted(world).items()
    }  # fmt: skip
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= TOLERANCE, (worst, world.rows[worst], fitted(world)[worst])


def test_fade_rate_per_1000_cycles_agrees_with_the_simulators_truth(world: World) -> None:
    errors = {
        serial: relative_error(world.rows[serial]["capacity_fade_pct_per_1000_cycles"],
                               truth.fade_pct_per_1000_cycles)
        for serial, truth in fitted(world).items()
    }  # fmt: skip
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= TOLERANCE, (worst, world.rows[worst], fitted(world)[worst])


def test_soh_at_both_ends_of_the_window_agrees_with_the_truth(world: World) -> None:
    for serial, truth in truths(world).items():
        row = world.rows[serial]
        assert relative_error(row["soh_start_pct"], truth.soh_start_pct) <= TOLERANCE, serial
        assert relative_error(row["soh_end_pct"], truth.soh_end_pct) <= TOLERANCE, serial
    # Tighter than the target: the BMS reports SoH with about 0.5 points of noise.
    end_errors = [
        abs(world.rows[s]["soh_end_pct"] - t.soh_end_pct) for s, t in truths(world).items()
    ]
    assert statistics.fmean(end_errors) < 1.0


def test_fleet_summary_soh_matches_the_true_fleet(world: World) -> None:
    true_end = sorted(t.soh_end_pct for t in truths(world).values())
    summary = world.summary
    assert summary["batteries_reporting"] >= len(true_end)
    histogram_total = sum(b["batteries"] for b in summary["soh_histogram"])
    assert histogram_total == summary["batteries_reporting"]
    reported = sorted(r["soh_end_pct"] for r in world.rows.values() if r["soh_end_pct"] is not None)
    assert relative_error(statistics.median(reported), statistics.median(true_end)) <= TOLERANCE


def planted(world: World) -> dict[str, FaultMode]:
    """Planted faults on batteries that saw enough use in the window for a fault to show."""
    return {
        serial: fault
        for serial, fault in world.fleet.faulty_serials().items()
        if serial in fitted(world)
    }


def test_the_seed_plants_every_kind_of_fault_on_a_battery_in_use(world: World) -> None:
    assert set(planted(world).values()) == set(EXPECTED_KIND)


def test_anomalies_include_every_planted_fault(world: World) -> None:
    found = {(a["serial"], a["kind"]) for a in world.summary["anomalies"]}
    missing = {
        serial: fault.value
        for serial, fault in planted(world).items()
        if (serial, EXPECTED_KIND[fault]) not in found
    }
    assert not missing, (missing, world.summary["anomalies"])


def test_anomalies_raise_few_false_alarms(world: World) -> None:
    faulty = set(world.fleet.faulty_serials())
    false_alarms = {a["serial"] for a in world.summary["anomalies"]} - faulty
    healthy = len(world.fleet.batteries) - len(faulty)
    assert len(false_alarms) <= max(1, round(0.1 * healthy)), world.summary["anomalies"]


def test_detection_job_recommends_quarantine_for_the_planted_faults(world: World) -> None:
    with world.factory.begin() as session:
        refresh_recommendations(session, day_from=world.day_from, day_to=world.day_to)
    for serial in planted(world):
        passport = world.client.get(f"/v1/batteries/{serial}/passport")
        assert passport.status_code == 200
        kinds = {r["kind"] for r in passport.json()["quarantine_recommendations"]}
        assert EXPECTED_KIND[world.fleet.faulty_serials()[serial]] in kinds, serial


# ---------------------------------------------------------------- passport freshness

# Issue 14: the BMS reports whole cycles (int(efc)), so a count is up to one cycle below the
# truth whatever its size; beyond that, 2 %.
CYCLES_TOLERANCE = 0.02
CYCLES_RESOLUTION = 1.0


def passports(world: World) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for battery in world.fleet.batteries:
        response = world.client.get(f"/v1/batteries/{battery.serial}/passport")
        assert response.status_code == 200, response.text
        out[battery.serial] = response.json()
    return out


def test_passport_cycles_are_the_bms_latest_count_within_2_percent_of_the_truth(
    world: World,
) -> None:
    """Each passport's cycles are its BMS's latest count, measured when it says, and agree
    with the true equivalent full cycles at that instant (issue 14: they were stale)."""
    true_efc = {
        (row["battery_serial"], datetime.fromisoformat(row["ts"])): row["equivalent_full_cycles"]
        for row in world.sink.truth
        if row["event"] in ("charge_end", "capacity_measured")
    }
    latest_health: dict[str, datetime] = {}
    for _, record in world.sink.records[RecordKind.health]:
        at = datetime.fromisoformat(record["ts"])
        latest_health[record["battery_serial"]] = max(
            at, latest_health.get(record["battery_serial"], at)
        )
    assert latest_health
    errors: dict[str, float] = {}
    for serial, body in passports(world).items():
        durability = body["durability"]
        if serial not in latest_health:
            assert durability["equivalent_full_cycles_source"] != "health_record", serial
            continue
        measured_at = datetime.fromisoformat(durability["equivalent_full_cycles_measured_at"])
        assert durability["equivalent_full_cycles_source"] == "health_record", serial
        assert measured_at == latest_health[serial], serial
        truth = true_efc[(serial, measured_at)]
        error = abs(durability["equivalent_full_cycles"] - truth)
        errors[serial] = error / truth
        assert error <= max(CYCLES_TOLERANCE * truth, CYCLES_RESOLUTION), (
            serial,
            durability,
            truth,
        )
    assert len(errors) == len(latest_health)


def test_passport_lifetime_throughput_covers_the_history_given_at_registration(
    world: World,
) -> None:
    """Issue 14: lifetime throughput covered only the time since registration. The simulator
    registers each pack's history, and every passport carries it, from manufacture.

    Not asserted: that the sum tracks the true lifetime. On this fleet (seed 5, 240 days) the
    median of capacity_throughput_ah / (2 x nominal Ah) / true cycles was 0.72 (2026-12-07):
    the Ah that telemetry measures after registration fall short of the truth; not yet
    understood."""
    for serial, body in passports(world).items():
        durability = body["durability"]
        assert durability["capacity_throughput_at_registration_ah"] is not None, serial
        assert durability["throughput_from"] == body["battery"]["manufactured_on"], serial
