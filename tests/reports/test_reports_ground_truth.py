"""The OEM reports against a simulated fleet whose true state the simulator knows.

A small fleet (3 stations, 40 batteries, 8 simulated months, a share of planted faults) runs
in memory and goes through the real ingest path into a database of this module's own
(tests/fixtures/ground_truth_world.py). A capacity measurement on every charge: the most
evidence a fit can get; tests/reports/test_reports_ground_truth_cli_settings.py checks the
reports under the command line's settings.

Ground truth: the truth rows the fleet writes at each capacity measurement (true capacity,
true equivalent full cycles, same instant), fitted the way the report fits the measured
records. The report sees only the measurements (0.4 % noise, whole-number cycle counts), so
its fit must come within 10 % of the fit of the truth.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from datetime import timedelta

import pytest

from app.core import clock
from simulators.battery import FaultMode
from simulators.fleet import FleetConfig
from tests.conftest import TEST_DB
from tests.fixtures.ground_truth_world import (
    EXPECTED_KIND,
    TEST_WORLD_SETTINGS,
    Truth,
    World,
    judge_passport_cycles,
    passports,
    simulated_world,
    truths,
)

GT_DB = f"{TEST_DB}_gt"
DAYS = 240
TOLERANCE = 0.10
# Fewer points than this, or fewer cycles in the window, leave any fit at the mercy of the
# measurement noise: such batteries are counted but not held to 10 %.
MIN_CAPACITY_RECORDS = 20
MIN_WINDOW_CYCLES = 10.0

# The module's world (a 40-day fleet simulated, its custody recorded, its telemetry written)
# takes 3-4 minutes alone on the shared 2-core machine, and more beside a parallel suite:
# beyond the suite's default 300 s.
# One xdist worker builds the module-scoped world (pyproject: --dist loadgroup).
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow, pytest.mark.xdist_group("ground_truth")]


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
        **TEST_WORLD_SETTINGS,
    )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with simulated_world(GT_DB, fleet_config()) as w:
        yield w


def fitted(world: World) -> dict[str, Truth]:
    """The batteries with enough evidence for a fit to be held to 10 %."""
    return {
        serial: truth
        for serial, truth in truths(world).items()
        if truth.points >= MIN_CAPACITY_RECORDS and truth.window_cycles >= MIN_WINDOW_CYCLES
    }


def relative_error(reported: float | None, true: float | None) -> float:
    assert reported is not None
    assert true is not None
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


def test_passports_recommend_quarantine_for_the_planted_faults_without_a_job(
    world: World,
) -> None:
    """Over the default window (the last 90 days), as the passport reads it: no detection
    job has run."""
    for serial in planted(world):
        passport = world.client.get(f"/v1/batteries/{serial}/passport")
        assert passport.status_code == 200
        kinds = {r["kind"] for r in passport.json()["quarantine_recommendations"]}
        assert EXPECTED_KIND[world.fleet.faulty_serials()[serial]] in kinds, serial


# ---------------------------------------------------------------- passport freshness


def test_passport_cycles_are_the_bms_latest_count_within_2_percent_of_the_truth(
    world: World,
) -> None:
    """Issue 14: passport cycles were stale (judge_passport_cycles says what is checked)."""
    verdict = judge_passport_cycles(world)
    assert verdict.with_health_record > 0
    assert not verdict.failures, verdict.failures
    assert len(verdict.errors) == verdict.with_health_record


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
