"""A small fleet run entirely in memory: swaps happen, records follow the contract and the truth."""

import re
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devices.contract import RecordKind, validate_record
from simulators.battery import FaultMode
from simulators.fleet import Fleet, FleetConfig, FleetStats, SimSlot, pick_battery
from simulators.sinks import (
    GroundTruthWriter,
    InMemorySink,
    SwapRequest,
    SwapResult,
    read_ground_truth,
)

SMALL = FleetConfig(stations=3, vehicles=30, days=2.0, seed=11, slots_per_station=10)


def run_small(config: FleetConfig = SMALL) -> tuple[Fleet, InMemorySink]:
    sink = InMemorySink()
    fleet = Fleet(config, sink, swap_recorder=sink, truth=sink)
    fleet.run()
    return fleet, sink


@pytest.fixture(scope="module")
def small_run() -> tuple[Fleet, InMemorySink]:
    return run_small()


def test_short_run_swaps_and_publishes_every_record_kind(
    small_run: tuple[Fleet, InMemorySink],
) -> None:
    fleet, sink = small_run
    assert fleet.stats.swaps > 30
    assert len(sink.swaps) == fleet.stats.swaps
    assert set(sink.records) == set(RecordKind)
    assert fleet.stats.stranded == 0
    assert fleet.stats.total_records == sum(sink.record_counts.values())


def test_every_record_passes_the_wire_contract(small_run: tuple[Fleet, InMemorySink]) -> None:
    _, sink = small_run
    for kind, records in sink.records.items():
        for _, record in records[:: max(1, len(records) // 2000)]:
            validate_record(kind, record)


def test_records_identify_the_station_or_vehicle_that_owns_them(
    small_run: tuple[Fleet, InMemorySink],
) -> None:
    fleet, sink = small_run
    station_codes = {s.code for s in fleet.stations}
    vins = {v.vin for v in fleet.vehicles}
    for kind in (RecordKind.charging, RecordKind.health, RecordKind.capacity, RecordKind.status):
        assert {identity for identity, _ in sink.records[kind]} <= station_codes
    assert {identity for identity, _ in sink.records[RecordKind.vehicle]} <= vins


def test_charging_samples_are_physically_plausible(
    small_run: tuple[Fleet, InMemorySink],
) -> None:
    fleet, sink = small_run
    cfg = fleet.config
    per_tick: dict[tuple[str, str], float] = defaultdict(float)
    energy: dict[str, float] = {}
    for station, r in sink.records[RecordKind.charging]:
        assert 0 <= r["soc_pct"] <= 100
        assert r["power_kw"] <= cfg.charger_kw + 1e-6
        assert 40 < r["voltage_v"] < 90
        assert cfg.ambient_mean_c - cfg.ambient_swing_c - 2 < r["temp_c_min"]
        assert r["temp_c_min"] <= r["temp_c_max"] < 60
        per_tick[(station, r["ts"])] += r["power_kw"]
        # Energy counts up within one charge and restarts with the next.
        previous = energy.get(r["battery_serial"], 0.0)
        assert r["energy_kwh"] >= previous or r["energy_kwh"] < 0.5
        energy[r["battery_serial"]] = r["energy_kwh"]
    assert max(per_tick.values()) <= cfg.station_power_kw + 1e-6


def test_vehicle_telemetry_drains_while_driving(small_run: tuple[Fleet, InMemorySink]) -> None:
    _, sink = small_run
    by_vin: dict[str, list[dict[str, object]]] = defaultdict(list)
    for vin, r in sink.records[RecordKind.vehicle]:
        by_vin[vin].append(r)
    for records in by_vin.values():
        odometers = [float(r["odometer_km"]) for r in records]  # type: ignore[arg-type]
        assert odometers == sorted(odometers)
        assert all(float(r["pack_current_a"]) <= 0 for r in records)  # type: ignore[arg-type]
        timestamps = [str(r["ts"]) for r in records]
        assert timestamps == sorted(timestamps)
        assert len(set(timestamps)) == len(timestamps)
    assert len(by_vin) > 25


def test_swaps_hand_out_batteries_at_or_above_target(
    small_run: tuple[Fleet, InMemorySink],
) -> None:
    fleet, sink = small_run
    for request, result in sink.swaps:
        assert result.accepted
        assert request.installed_soc_pct >= fleet.config.target_soc_pct
        assert request.removed_battery_serial != request.proposed_battery_serial


def test_custody_stays_consistent_after_a_run(small_run: tuple[Fleet, InMemorySink]) -> None:
    fleet, _ = small_run
    places = [v.battery.serial for v in fleet.vehicles]
    for station in fleet.stations:
        places += [s.battery.serial for s in station.slots if s.battery is not None]
        assert sum(1 for s in station.slots if s.battery is None) >= 1
    assert len(places) == len(set(places)) == len(fleet.batteries)


def test_capacity_records_follow_the_ground_truth(small_run: tuple[Fleet, InMemorySink]) -> None:
    _, sink = small_run
    truth = {
        (row["battery_serial"], row["ts"]): row
        for row in sink.truth
        if row["event"] == "capacity_measured"
    }
    records = sink.records[RecordKind.capacity]
    assert len(records) == len(truth) > 5
    for _, r in records:
        row = truth[(r["battery_serial"], r["ts"])]
        assert r["capacity_ah"] == pytest.approx(row["capacity_ah"], rel=0.02)
        assert r["capacity_kwh"] == pytest.approx(row["capacity_kwh"], rel=0.02)


def test_same_seed_gives_the_same_run_and_another_seed_does_not() -> None:
    config = FleetConfig(stations=2, vehicles=12, days=1.0, seed=5, slots_per_station=8)
    _, first = run_small(config)
    _, second = run_small(config)
    _, other = run_small(FleetConfig(stations=2, vehicles=12, days=1.0, seed=6,
                                     slots_per_station=8))  # fmt: skip
    assert first.records == second.records
    assert first.swaps == second.swaps
    assert first.truth == second.truth
    assert first.records[RecordKind.vehicle] != other.records[RecordKind.vehicle]


def test_station_picks_the_highest_soc_then_the_fewest_cycles() -> None:
    fleet = Fleet(SMALL, InMemorySink())
    station = fleet.stations[0]
    batteries = [s.battery for s in station.slots if s.battery is not None]
    key = batteries[0].spec.code
    same_type = [b for b in batteries if b.spec.code == key][:3]
    assert len(same_type) == 3
    slots = []
    for i, (battery, soc, cycles) in enumerate(
        zip(same_type, (95.0, 100.0, 100.0), (5, 40, 30), strict=True)
    ):
        battery.soc_pct = soc
        slot = SimSlot(i + 1)
        slot.battery = battery
        slots.append(slot)
        fleet.reported_cycles[battery.serial] = cycles
    picked = pick_battery(slots, frozenset({key}), 90.0, 70.0, {}, fleet.reported_cycles)
    assert picked is slots[2]
    # Below the SoH floor a battery is never handed out, however full.
    low = {same_type[2].serial: 60.0}
    assert (
        pick_battery(slots, frozenset({key}), 90.0, 70.0, low, fleet.reported_cycles) is (slots[1])
    )
    assert pick_battery(slots, frozenset({"other"}), 90.0, 70.0, {}, {}) is None
    assert pick_battery(slots, frozenset({key}), 100.5, 70.0, {}, {}) is None


class BackendPicksLowestSerial:
    """A backend that decides differently from the station: the sim must follow it."""

    def __init__(self, fleet_ref: list[Fleet]) -> None:
        self.fleet_ref = fleet_ref
        self.answers: list[tuple[SwapRequest, str]] = []

    def record_swap(self, request: SwapRequest) -> SwapResult:
        fleet = self.fleet_ref[0]
        station = next(s for s in fleet.stations if s.code == request.station_code)
        proposed = next(
            s.battery for s in station.slots
            if s.battery is not None and s.battery.serial == request.proposed_battery_serial
        )  # fmt: skip
        eligible = sorted(
            s.battery.serial for s in station.slots
            if s.battery is not None and s.battery.spec.code == proposed.spec.code
            and s.battery.soc_pct >= fleet.config.target_soc_pct
        )  # fmt: skip
        self.answers.append((request, eligible[0]))
        return SwapResult(True, eligible[0], swap_id=f"swap-{len(self.answers)}")


def test_sim_installs_the_battery_the_backend_chose() -> None:
    ref: list[Fleet] = []
    backend = BackendPicksLowestSerial(ref)
    sink = InMemorySink()
    fleet = Fleet(SMALL, sink, swap_recorder=backend, truth=sink)
    ref.append(fleet)
    fleet.run()

    assert backend.answers
    differing = [(req, serial) for req, serial in backend.answers
                 if serial != req.proposed_battery_serial]  # fmt: skip
    assert differing, "the stand-in backend should disagree with the station at least once"
    # After each swap the vehicle's telemetry carries the battery the backend named.
    telemetry = defaultdict(list)
    for vin, r in sink.records[RecordKind.vehicle]:
        telemetry[vin].append(r)
    checked = 0
    for request, serial in differing:
        after = [r for r in telemetry[request.vin] if r["ts"] > request.started_at]
        if after:
            assert after[0]["battery_serial"] == serial
            checked += 1
    assert checked > 0
    assert fleet.stats.swap_mismatches == 0


class RejectEverything:
    def __init__(self) -> None:
        self.requests = 0

    def record_swap(self, request: SwapRequest) -> SwapResult:
        self.requests += 1
        return SwapResult(False, reason_code="NoBatteryAvailable")


def test_rejected_swaps_leave_batteries_where_they_were() -> None:
    backend = RejectEverything()
    sink = InMemorySink()
    config = FleetConfig(stations=2, vehicles=10, days=1.0, seed=3, slots_per_station=8)
    fleet = Fleet(config, sink, swap_recorder=backend)
    before = {v.vin: v.battery.serial for v in fleet.vehicles}
    fleet.run()

    assert backend.requests > 0
    assert fleet.stats.swaps == 0
    assert fleet.stats.swaps_rejected["NoBatteryAvailable"] == backend.requests
    assert {v.vin: v.battery.serial for v in fleet.vehicles} == before


def test_faulty_batteries_fade_faster_in_ground_truth() -> None:
    config = FleetConfig(
        stations=3, vehicles=30, days=6.0, seed=2, slots_per_station=10, faulty_share=0.35
    )
    fleet, sink = run_small(config)
    snapshots = [row for row in sink.truth if row["event"] == "snapshot"]
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    fault: dict[str, str] = {}
    for row in snapshots:
        first.setdefault(row["battery_serial"], row["capacity_ah"])
        last[row["battery_serial"]] = row["capacity_ah"]
        fault[row["battery_serial"]] = row["fault"]

    def mean_fade(mode: FaultMode) -> float:
        fades = [1 - last[s] / first[s] for s in first if fault[s] == mode.value]
        assert fades, mode
        return sum(fades) / len(fades)

    healthy = mean_fade(FaultMode.none)
    assert healthy > 0
    assert mean_fade(FaultMode.fast_fade) > 2.5 * healthy
    assert mean_fade(FaultMode.cell_imbalance) > 1.5 * healthy
    assert set(fleet.faulty_serials()) == {s for s, f in fault.items() if f != "none"}


def test_hot_cell_batteries_report_hotter_charging(small_run: tuple[Fleet, InMemorySink]) -> None:
    config = FleetConfig(stations=3, vehicles=30, days=2.0, seed=4, slots_per_station=10,
                         faulty_share=0.4)  # fmt: skip
    fleet, sink = run_small(config)
    hot = {s for s, f in fleet.faulty_serials().items() if f is FaultMode.hot_cell}
    assert hot
    spread: dict[bool, list[float]] = defaultdict(list)
    for _, r in sink.records[RecordKind.charging]:
        spread[r["battery_serial"] in hot].append(r["temp_c_max"] - r["temp_c_min"])
    assert sum(spread[True]) / len(spread[True]) > 2 * sum(spread[False]) / len(spread[False])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_ground_truth_file_round_trips(tmp_path: Path, suffix: str) -> None:
    config = FleetConfig(stations=1, vehicles=4, days=1.0, seed=9, slots_per_station=6)
    path = tmp_path / f"truth{suffix}"
    sink = InMemorySink(keep_records=False)
    with GroundTruthWriter(path) as writer:
        fleet = Fleet(config, sink, truth=writer)
        fleet.run()
        rows_written = writer.rows
    rows = read_ground_truth(path)
    assert len(rows) == rows_written >= 2 * len(fleet.batteries)
    serials = {b.serial for b in fleet.batteries}
    assert {row["battery_serial"] for row in rows} == serials
    final = {row["battery_serial"]: row for row in rows}
    for battery in fleet.batteries:
        assert float(final[battery.serial]["capacity_ah"]) == pytest.approx(
            battery.capacity_ah, rel=1e-4
        )


def test_manifest_describes_the_fleet_it_will_run() -> None:
    fleet = Fleet(SMALL, InMemorySink())
    m = fleet.manifest
    assert {o.role for o in m.organizations} == {"operator", "owner", "oem"}
    assert len(m.stations) == SMALL.stations
    assert len(m.vehicles) == SMALL.vehicles
    assert len(m.batteries) == len(fleet.batteries)
    pack_codes = {p.code for p in m.pack_types}
    assert all(b.pack_type_code in pack_codes for b in m.batteries)
    assert all(set(vm.pack_type_codes) <= pack_codes for vm in m.vehicle_models)
    assert sum(1 for b in m.batteries if b.vin) == SMALL.vehicles
    assert all(re.fullmatch(r"[A-HJ-NPR-Z0-9]{17}", v.vin) for v in m.vehicles)
    placed = {(b.station_code, b.slot_number) for b in m.batteries if b.station_code}
    assert len(placed) == sum(1 for b in m.batteries if b.station_code)


def test_paced_run_does_not_outrun_its_speed_factor() -> None:
    config = FleetConfig(stations=1, vehicles=3, days=600 / 86_400, seed=1, slots_per_station=4,
                         start=datetime(2025, 3, 1, tzinfo=UTC))  # fmt: skip
    fleet = Fleet(config, InMemorySink(keep_records=False))
    started = time.monotonic()
    fleet.run(speed=3000.0)
    # 600 simulated seconds at 3000x cannot take less than 0.2 s of wall time.
    assert time.monotonic() - started >= 0.19
    assert fleet.now == fleet.end


def test_a_paced_run_backfills_flat_out_then_never_gets_ahead_of_the_real_clock() -> None:
    now = time.time()
    # An hour of history, then three seconds into the future.
    start = datetime.fromtimestamp(now - 3600, UTC).replace(microsecond=0)
    config = FleetConfig(stations=1, vehicles=3, days=(now + 3 - start.timestamp()) / 86_400,
                         seed=1, slots_per_station=4, start=start)  # fmt: skip
    fleet = Fleet(config, InMemorySink(keep_records=False))
    ahead: list[float] = []

    def watch(stats: FleetStats) -> None:
        ahead.append(fleet.now - time.time())

    started = time.monotonic()
    fleet.run(speed=1000.0, flat_out_until=now - 60, progress=watch, progress_interval_s=0.05)
    wall = time.monotonic() - started
    assert fleet.now == fleet.end
    # The events ahead of the clock waited for it; the hour before ran flat out.
    assert time.time() >= fleet.end - 0.5
    assert wall < 20
    assert max(ahead) <= 1.0


def test_a_paced_run_never_gets_ahead_of_the_clock_it_is_given() -> None:
    # The backend's clock, a thousand days behind the wall clock: on the wall clock the run
    # would be in the past and run flat out; on its own clock it ends 2 s in the future.
    def behind() -> float:
        return time.time() - 1000 * 86_400

    start = datetime.fromtimestamp(behind() - 600, UTC).replace(microsecond=0)
    config = FleetConfig(stations=1, vehicles=3, days=(behind() + 2 - start.timestamp()) / 86_400,
                         seed=1, slots_per_station=4, start=start)  # fmt: skip
    fleet = Fleet(config, InMemorySink(keep_records=False))
    fleet.run(speed=1000.0, flat_out_until=behind() - 60, clock=behind)
    assert fleet.now == fleet.end
    assert behind() >= fleet.end - 0.5
