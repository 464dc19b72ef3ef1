"""A digest of seeded simulator runs, to show that a change of the simulator's code left its
output alone: every record, swap request and answer, ground-truth row, the stats, the manifest
and the final state of every battery, vehicle and slot.

    python bench/sim_fingerprint.py            # eight small runs, a few seconds
    python bench/sim_fingerprint.py --big      # and the standard fleet, 20 x 300 x 2 days

Run it on two checkouts (`git worktree`, or `git archive <commit> simulators devices` into a
directory first on PYTHONPATH) and compare the lines: equal digests, equal runs. The CPU time
of each scenario is printed too, for a rough comparison of speed.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devices.contract import RecordKind  # noqa: E402
from simulators.fleet import Fleet, FleetConfig  # noqa: E402
from simulators.scenarios import demo_config, scenario  # noqa: E402
from simulators.sinks import AcceptProposedSwaps, SwapRecorder, SwapRequest, SwapResult  # noqa: E402

Record = dict[str, Any]


class HashingSink:
    """Folds everything the fleet hands out into one digest, in the order it comes."""

    def __init__(self, recorder: SwapRecorder | None = None) -> None:
        self.digest = hashlib.blake2b(digest_size=16)
        self.recorder = recorder or AcceptProposedSwaps()

    def publish(self, kind: RecordKind, identity: str, records: Sequence[Record]) -> None:
        self.digest.update(orjson.dumps([kind.value, identity, list(records)]))

    def record_swap(self, request: SwapRequest) -> SwapResult:
        result = self.recorder.record_swap(request)
        answer = [
            result.accepted,
            result.installed_battery_serial,
            result.reason_code,
            result.swap_id,
        ]
        self.digest.update(orjson.dumps([asdict(request), answer]))
        return result

    def write(self, row: Record) -> None:
        self.digest.update(orjson.dumps(row))


def final_state(fleet: Fleet) -> bytes:
    manifest = fleet.manifest
    state = {
        "stats": {
            name: dict(sorted(value.items())) if isinstance(value, dict) else value
            for name, value in vars(fleet.stats).items()
        },
        "manifest": [
            [asdict(entry) for entry in entries]
            for entries in (
                manifest.organizations, manifest.pack_types, manifest.vehicle_models,
                manifest.stations, manifest.vehicles, manifest.batteries,
            )
        ],
        "batteries": [
            [b.serial, b.soc_pct, b.soh_pct, b.efc, b.temp_c, b.capacity_ah, b.t]
            for b in fleet.batteries
        ],
        "vehicles": [
            [v.vin, v.battery.serial, v.lat, v.lon, v.odometer_km, v.heading]
            for v in fleet.vehicles
        ],
        "slots": [
            [s.code, [[sl.number, sl.battery.serial if sl.battery else None, sl.charging]
                      for sl in s.slots]]
            for s in fleet.stations
        ],
        "reported": [sorted(fleet.reported_soh.items()), sorted(fleet.reported_cycles.items())],
        "faulty": sorted((serial, mode.value) for serial, mode in fleet.faulty_serials().items()),
        "now": fleet.now,
    }  # fmt: skip
    return orjson.dumps(state)


def run(config: FleetConfig, sink: HashingSink, **run_options: Any) -> Fleet:
    fleet = Fleet(config, sink, swap_recorder=sink, truth=sink)
    fleet.run(**run_options)
    return fleet


def digest_of(fleet: Fleet, sink: HashingSink) -> str:
    sink.digest.update(final_state(fleet))
    return sink.digest.hexdigest()


class DisagreeingBackend:
    """Picks the lowest serial at or above target, now and then rejects or names a battery
    the station does not hold: every branch of the swap protocol."""

    def __init__(self) -> None:
        self.fleet: Fleet | None = None
        self.answers = 0

    def record_swap(self, request: SwapRequest) -> SwapResult:
        assert self.fleet is not None
        fleet = self.fleet
        station = next(s for s in fleet.stations if s.code == request.station_code)
        batteries = [s.battery for s in station.slots if s.battery is not None]
        proposed = next(b for b in batteries if b.serial == request.proposed_battery_serial)
        eligible = sorted(
            b.serial for b in batteries
            if b.spec.code == proposed.spec.code and b.soc_pct >= fleet.config.target_soc_pct
        )  # fmt: skip
        self.answers += 1
        if self.answers % 17 == 0:
            return SwapResult(False, reason_code="BatterySoC")
        if self.answers % 29 == 0:
            return SwapResult(True, "not-at-this-station", swap_id="x")
        return SwapResult(True, eligible[0], swap_id=f"swap-{self.answers}")


class RejectEverything:
    def record_swap(self, request: SwapRequest) -> SwapResult:
        return SwapResult(False, reason_code="NoBatteryAvailable")


def small() -> str:
    sink = HashingSink()
    config = FleetConfig(stations=3, vehicles=30, days=2.0, seed=11, slots_per_station=10)
    return digest_of(run(config, sink), sink)


def faulty() -> str:
    sink = HashingSink()
    config = FleetConfig(stations=3, vehicles=30, days=6.0, seed=4, slots_per_station=10,
                         faulty_share=0.4)  # fmt: skip
    return digest_of(run(config, sink), sink)


def disagreeing_backend() -> str:
    backend = DisagreeingBackend()
    sink = HashingSink(backend)
    config = FleetConfig(stations=3, vehicles=30, days=2.0, seed=11, slots_per_station=10)
    fleet = Fleet(config, sink, swap_recorder=sink, truth=sink)
    backend.fleet = fleet
    fleet.run()
    return digest_of(fleet, sink)


def rejecting_backend() -> str:
    sink = HashingSink(RejectEverything())
    config = FleetConfig(stations=2, vehicles=10, days=1.0, seed=3, slots_per_station=8)
    return digest_of(run(config, sink), sink)


def paced_after_backfill() -> str:
    sink = HashingSink()
    config = FleetConfig(stations=2, vehicles=12, days=1.0, seed=5, slots_per_station=6,
                         start=datetime(2025, 3, 1, tzinfo=UTC))  # fmt: skip
    backfill_until = config.start.timestamp() + 30_000
    return digest_of(run(config, sink, speed=1e12, flat_out_until=backfill_until), sink)


def adopted_custody() -> str:
    config = FleetConfig(stations=3, vehicles=20, days=1.0, seed=7, slots_per_station=8)
    first = run(config, HashingSink())
    locations: dict[str, dict[str, Any]] = {}
    soc: dict[str, float] = {}
    for v in first.vehicles:
        locations[v.battery.serial] = {"kind": "vehicle", "vin": v.vin}
        soc[v.battery.serial] = round(v.battery.soc_pct, 1)
    for st in first.stations:
        for sl in st.slots:
            if sl.battery is not None:
                locations[sl.battery.serial] = {
                    "kind": "slot", "station_code": st.code, "slot_number": sl.number,
                }  # fmt: skip
    sink = HashingSink()
    second = Fleet(config, sink, swap_recorder=sink, truth=sink)
    sink.digest.update(str(second.adopt_custody(locations, soc)).encode())
    second.run()
    return digest_of(second, sink)


def mixed_scenario() -> str:
    """The default of `swapfleet simulate` (simulators/scenarios.py), small: trucks, vans, cars."""
    sink = HashingSink()
    config = scenario("mixed").config(stations=3, vehicles=30, days=1.0, seed=11)
    return digest_of(run(config, sink), sink)


def demo_network() -> str:
    """What `swapfleet up` simulates (simulators.scenarios.demo_config), for a day."""
    sink = HashingSink()
    return digest_of(run(demo_config(days=1.0, start=datetime(2025, 3, 1, tzinfo=UTC)), sink),
                     sink)  # fmt: skip


def standard_fleet() -> str:
    sink = HashingSink()
    return digest_of(run(FleetConfig(stations=20, vehicles=300, days=2.0, seed=1), sink), sink)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big", action="store_true", help="also the standard 20 x 300 fleet")
    args = parser.parse_args()
    scenarios: list[Callable[[], str]] = [
        small, faulty, disagreeing_backend, rejecting_backend, paced_after_backfill,
        adopted_custody, mixed_scenario, demo_network,
    ]  # fmt: skip
    if args.big:
        scenarios.append(standard_fleet)
    for case in scenarios:
        started = time.process_time()
        digest = case()
        cpu = time.process_time() - started
        sys.stdout.write(f"{case.__name__:22s} {digest}  cpu {cpu:.2f} s\n")


if __name__ == "__main__":
    main()
