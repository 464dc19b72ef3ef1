"""The true state of each battery, which no device reports: rows for the truth sink at each
charge end and in periodic snapshots of the whole fleet, to judge the backend's estimates by."""

from __future__ import annotations

from simulators.battery import Battery
from simulators.config import FleetConfig
from simulators.engine import TRUTH, Engine
from simulators.sinks import TruthSink


class GroundTruth:
    def __init__(
        self,
        config: FleetConfig,
        engine: Engine,
        batteries: list[Battery],
        sink: TruthSink | None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.batteries = batteries
        self.sink = sink
        engine.on(TRUTH, self.on_snapshot)

    def write(self, battery: Battery, event: str) -> None:
        if self.sink is None:
            return
        self.sink.write(
            {
                "ts": self.engine.ts(self.engine.now),
                "event": event,
                "battery_serial": battery.serial,
                "pack_type": self.config.code(battery.spec.code),
                "fault": battery.traits.fault.value,
                "capacity_ah": round(battery.capacity_ah, 4),
                "capacity_kwh": round(battery.capacity_kwh, 5),
                "soh_pct": round(battery.soh_pct, 3),
                "resistance_mohm": round(battery.resistance_ohm() * 1000.0, 3),
                "equivalent_full_cycles": round(battery.efc, 3),
                "calendar_loss_pct": round(battery.cal_loss * 100.0, 4),
                "cycle_loss_pct": round(battery.cyc_loss * 100.0, 4),
                "other_loss_pct": round(battery.extra_loss * 100.0, 4),
            }
        )

    def schedule(self) -> None:
        self.engine.push(self.engine.start, TRUTH, 0)

    def on_snapshot(self, _: int) -> None:
        self.snapshot()
        self.engine.push(self.engine.now + self.config.truth_interval_s, TRUTH, 0)

    def snapshot(self) -> None:
        now = self.engine.now
        ambient = self.engine.ambient_c(now)
        for battery in self.batteries:
            if battery.current_a == 0.0:
                battery.rest(now, ambient)
            self.write(battery, "snapshot")
