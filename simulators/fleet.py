"""A discrete-event fleet: swap stations that charge, vehicles that drive and come to swap.

Fleet is the façade the CLI, tests and benchmarks use; the work is done by one module a job:
world (building the world and its manifest from a config and catalog), engine (the clock and
event queue), vehicles, stations, swap_protocol (a vehicle at a station and the backend's
answer), ground_truth (the batteries' true state) and custody (continuing from the backend's
state). Every random draw comes from a generator seeded from the run's seed and the entity's
name, so a seed gives the same run, record for record, at any speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from devices.contract import RecordKind
from simulators.battery import FaultMode
from simulators.config import DEFAULT_START, FleetConfig, FleetStats
from simulators.custody import adopt_custody
from simulators.engine import END, Engine
from simulators.ground_truth import GroundTruth
from simulators.sinks import AcceptProposedSwaps, Record, RecordSink, SwapRecorder, TruthSink
from simulators.stations import SimSlot, SimStation, StationLoad, Stations
from simulators.swap_protocol import SwapProtocol, pick_battery
from simulators.vehicles import SimVehicle, Vehicles
from simulators.world import WorldBuilder

__all__ = [
    "DEFAULT_START",
    "Fleet",
    "FleetConfig",
    "FleetStats",
    "SimSlot",
    "SimStation",
    "SimVehicle",
    "pick_battery",
]


class Fleet:
    def __init__(
        self,
        config: FleetConfig,
        sink: RecordSink,
        *,
        swap_recorder: SwapRecorder | None = None,
        truth: TruthSink | None = None,
        world_builder: type[WorldBuilder] = WorldBuilder,
    ) -> None:
        self.config = config
        self.sink = sink
        self.stats = FleetStats()
        self.engine = Engine(config, self.stats)
        self.start = self.engine.start
        self.end = self.engine.end
        # A scenario with another layout of the world brings a WorldBuilder of its own.
        self.world = world_builder(config, self.start).build()
        self.stations = self.world.stations
        self.vehicles = self.world.vehicles
        self.batteries = self.world.batteries
        self.reported_soh = self.world.reported_soh
        self.reported_cycles = self.world.reported_cycles
        self.manifest = self.world.manifest
        self._stations = Stations(
            config, self.engine, self.stations,
            reported_soh=self.reported_soh, reported_cycles=self.reported_cycles,
            publish=self._publish, stats=self.stats,
        )  # fmt: skip
        self._vehicles = Vehicles(
            config, self.engine, self.vehicles, self.stations,
            publish=self._publish, stats=self.stats,
        )  # fmt: skip
        self._ground_truth = GroundTruth(config, self.engine, self.batteries, truth)
        self._swaps = SwapProtocol(
            config, self.engine, stations=self._stations, vehicles=self._vehicles,
            recorder=swap_recorder or AcceptProposedSwaps(), reported_soh=self.reported_soh,
            reported_cycles=self.reported_cycles, stats=self.stats,
        )  # fmt: skip
        self._stations.swaps = self._swaps
        self._stations.truth = self._ground_truth
        self._vehicles.swaps = self._swaps
        self.engine.on(END, self._on_end)
        self._schedule_first_events()

    def _schedule_first_events(self) -> None:
        # In this order: events at the same instant run in the order they were pushed.
        for station, slot in self.world.charging_from_start:
            self._stations.start_charge(station, slot)
        self._vehicles.plan_first_days()
        self._stations.schedule_status()
        self._ground_truth.schedule()
        self.engine.push(self.end, END, 0)

    def _publish(self, kind: RecordKind, identity: str, records: list[Record]) -> None:
        if not records:
            return
        self.sink.publish(kind, identity, records)
        self.stats.messages += 1
        self.stats.records[kind.value] += len(records)

    def _on_end(self, _: int) -> None:
        self._vehicles.flush_all()
        self._ground_truth.snapshot()

    # The recorder and the truth sink may be swapped before a run (a restarted fleet records
    # through the backend it registered with): they live where they are used.

    @property
    def recorder(self) -> SwapRecorder:
        return self._swaps.recorder

    @recorder.setter
    def recorder(self, recorder: SwapRecorder) -> None:
        self._swaps.recorder = recorder

    @property
    def truth(self) -> TruthSink | None:
        return self._ground_truth.sink

    @truth.setter
    def truth(self, truth: TruthSink | None) -> None:
        self._ground_truth.sink = truth

    # ---- time --------------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return self.engine.now

    def ambient_c(self, t: int) -> float:
        return self.engine.ambient_c(t)

    def ts(self, t: int) -> str:
        return self.engine.ts(t)

    # ---- running -----------------------------------------------------------------------------

    def run(
        self,
        *,
        speed: float | None = None,
        flat_out_until: float | None = None,
        progress: Callable[[FleetStats], None] | None = None,
        progress_interval_s: float = 0.25,
        should_stop: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> FleetStats:
        """Run to the end; speed is simulated seconds per wall second (None: flat out).

        Paced, the events before `flat_out_until` (a backfill of history) run flat out first,
        and the run never gets ahead of the real clock, `clock()` (see Engine.run)."""
        return self.engine.run(
            speed=speed,
            flat_out_until=flat_out_until,
            progress=progress,
            progress_interval_s=progress_interval_s,
            should_stop=should_stop,
            clock=clock,
        )

    # ---- continuing from the backend's state -----------------------------------------------

    def adopt_custody(
        self, locations: dict[str, dict[str, Any]], soc_pct: dict[str, float] | None = None
    ) -> int:
        """Put batteries where the backend says they are (a restart on the same database).

        locations maps a serial to the backend's location (kind, station_code, slot_number,
        vin); serials not in it stay where the simulation put them. Returns how many batteries
        moved. Call before run().
        """
        return adopt_custody(self.world, self._stations, locations, soc_pct)

    # ---- inspection --------------------------------------------------------------------------

    @property
    def station_load(self) -> StationLoad:
        return self._stations.load

    def faulty_serials(self) -> dict[str, FaultMode]:
        return {b.serial: b.traits.fault for b in self.batteries if b.faulty}
