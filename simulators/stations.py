"""Swap stations: slots that charge their packs under one power budget, health and capacity
readings at the end of a charge, and a periodic status."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devices.contract import RecordKind
from simulators.battery import Battery
from simulators.config import FleetConfig, FleetStats
from simulators.engine import STATION_TICK, STATUS, Engine
from simulators.sinks import Record

if TYPE_CHECKING:
    from simulators.ground_truth import GroundTruth
    from simulators.swap_protocol import SwapProtocol

# A two-wheeler's swap, door to door; a scenario's stations bring their own (StationKind).
SWAP_DURATION_S = 90

Publish = Callable[[RecordKind, str, list[Record]], None]


class SimSlot:
    __slots__ = ("number", "battery", "charging", "energy_kwh", "start_soc")

    def __init__(self, number: int) -> None:
        self.number = number
        self.battery: Battery | None = None
        self.charging = False
        self.energy_kwh = 0.0
        self.start_soc = 0.0


class SimStation:
    __slots__ = (
        "index", "code", "name", "lat", "lon", "power_kw", "charger_kw", "slots", "waiting",
        "ticking", "swap_s",
    )  # fmt: skip

    def __init__(
        self,
        index: int,
        code: str,
        name: str,
        lat: float,
        lon: float,
        *,
        power_kw: float,
        charger_kw: float,
        swap_s: int = SWAP_DURATION_S,
    ) -> None:
        self.index = index
        self.code = code
        self.name = name
        self.lat = lat
        self.lon = lon
        # The station's grid budget, shared by its slots, and each slot's charger.
        self.power_kw = power_kw
        self.charger_kw = charger_kw
        # How long a swap takes here, door to door.
        self.swap_s = swap_s
        self.slots: list[SimSlot] = []
        self.waiting: deque[int] = deque()
        self.ticking = False


@dataclass
class StationLoad:
    """What the stations drew from the grid: energy into the packs and the highest load one
    station reached at one step."""

    energy_kwh: float = 0.0
    peak_station_kw: float = 0.0


class Stations:
    """Charging, readings and status of every station; a ticking station steps its charging
    slots every charge_step_s until none charges."""

    def __init__(
        self,
        config: FleetConfig,
        engine: Engine,
        stations: list[SimStation],
        *,
        reported_soh: dict[str, float],
        reported_cycles: dict[str, float],
        publish: Publish,
        stats: FleetStats,
    ) -> None:
        self.config = config
        self.engine = engine
        self.stations = stations
        self.reported_soh = reported_soh
        self.reported_cycles = reported_cycles
        self._publish = publish
        self.stats = stats
        # Wired by the fleet: they and the stations call each other.
        self.swaps: SwapProtocol
        self.truth: GroundTruth
        self.load = StationLoad()
        engine.on(STATION_TICK, self.on_tick)
        engine.on(STATUS, self.on_status)

    def schedule_status(self) -> None:
        """Each station's first status, staggered over the status interval."""
        cfg = self.config
        for station in self.stations:
            offset = station.index * 7 % max(1, cfg.status_interval_s)
            self.engine.push(self.engine.start + offset, STATUS, station.index)

    def start_charge(self, station: SimStation, slot: SimSlot) -> None:
        battery = slot.battery
        if battery is None:
            return
        slot.charging = True
        slot.energy_kwh = 0.0
        slot.start_soc = battery.soc_pct
        if not station.ticking:
            station.ticking = True
            self.engine.push(
                self.engine.now + self.config.charge_step_s, STATION_TICK, station.index
            )

    def on_tick(self, index: int) -> None:
        cfg = self.config
        station = self.stations[index]
        engine = self.engine
        now = engine.now
        ambient = engine.ambient_c(now)
        charging = [s for s in station.slots if s.charging and s.battery is not None]
        # Power goes first to the packs closest to ready: they are the ones drivers wait for.
        charging.sort(key=lambda s: -s.battery.soc_pct if s.battery else 0.0)
        budget = station.power_kw
        charger_kw = station.charger_kw
        target = cfg.target_soc_pct
        ts = engine.ts(now)
        records: list[Record] = []
        finished: list[SimSlot] = []
        became_ready = False
        station_kw = 0.0
        for slot in charging:
            battery = slot.battery
            assert battery is not None
            requested_a = battery.requested_charge_current_a()
            if requested_a > 0.0:
                requested_v = battery._voltage_at(requested_a)
                request = requested_a * requested_v / 1000.0
            else:
                requested_v = None
                request = 0.0
            alloc = min(request, charger_kw, budget)
            budget -= alloc
            was_below = battery.soc_pct < target
            step = battery.charge(
                now, alloc, ambient, requested_a=requested_a, requested_v=requested_v
            )
            energy = slot.energy_kwh + step.energy_kwh
            slot.energy_kwh = energy
            station_kw += step.power_kw
            self.load.energy_kwh += step.energy_kwh
            # temp_c_min() and temp_c_max(), inlined.
            c = battery.current_a / battery._nom_ah
            c2 = c * c
            temp = battery.temp_c
            records.append(
                {
                    "battery_serial": battery.serial,
                    "slot": slot.number,
                    "ts": ts,
                    "soc_pct": round(battery.soc_pct, 1),
                    "voltage_v": round(step.voltage_v, 2),
                    "current_a": round(step.current_a, 2),
                    "power_kw": round(step.power_kw, 3),
                    "temp_c_min": round(temp - 0.4 - 0.5 * c2, 1),
                    "temp_c_max": round(
                        temp + 0.6 + 1.2 * c2 + battery._hot_extra_c * (0.3 + c2), 1
                    ),
                    "energy_kwh": round(energy, 4),
                }
            )
            if was_below and battery.soc_pct >= target:
                became_ready = True
            # With current flowing, step.done already is charge_complete().
            if step.done or (step.current_a <= 0.0 and battery.charge_complete()):
                finished.append(slot)
        if station_kw > self.load.peak_station_kw:
            self.load.peak_station_kw = station_kw
        self._publish(RecordKind.charging, station.code, records)
        for slot in finished:
            self._finish_charge(station, slot)
        if station.waiting and (became_ready or finished):
            self.swaps.serve_waiting(station)
        if any(s.charging for s in station.slots):
            engine.push(now + cfg.charge_step_s, STATION_TICK, index)
        else:
            station.ticking = False

    def _finish_charge(self, station: SimStation, slot: SimSlot) -> None:
        battery = slot.battery
        assert battery is not None
        now = self.engine.now
        slot.charging = False
        battery.close_half_cycle()
        battery.advance(now, 0.0, self.engine.ambient_c(now))
        self.stats.charges_completed += 1
        ts = self.engine.ts(now)
        soh = round(battery.bms_soh_pct(), 1)
        cycles = round(battery.efc, 1)
        self.reported_soh[battery.serial] = soh
        self.reported_cycles[battery.serial] = cycles
        cell_min, cell_max = battery.cell_voltages_v()
        self._publish(
            RecordKind.health,
            station.code,
            [
                {
                    "battery_serial": battery.serial,
                    "ts": ts,
                    "soh_pct": soh,
                    "internal_resistance_mohm": round(battery.measured_resistance_mohm(), 2),
                    "cell_voltage_min_v": round(cell_min, 3),
                    "cell_voltage_max_v": round(cell_max, 3),
                    "temp_c_max": round(battery.temp_c_max(), 1),
                    "cycle_count": int(battery.efc),
                }
            ],
        )
        event = "charge_end"
        if slot.start_soc <= self.config.capacity_max_start_soc_pct:
            event = "capacity_measured"
            capacity_ah = battery.measured_capacity_ah()
            self._publish(
                RecordKind.capacity,
                station.code,
                [
                    {
                        "battery_serial": battery.serial,
                        "ts": ts,
                        "capacity_kwh": round(
                            capacity_ah * battery.spec.nominal_voltage_v / 1000.0, 4
                        ),
                        "capacity_ah": round(capacity_ah, 3),
                        "method": "full_charge",
                        "temp_c": round(battery.temp_c, 1),
                    }
                ],
            )
        self.truth.write(battery, event)

    def on_status(self, index: int) -> None:
        station = self.stations[index]
        now = self.engine.now
        slots = []
        for slot in station.slots:
            battery = slot.battery
            if battery is None:
                slots.append({"slot": slot.number, "state": "empty"})
                continue
            state = "charging" if slot.charging else "ready"
            if self.reported_soh.get(battery.serial, 100.0) < self.config.soh_floor_pct:
                state = "fault"
            slots.append({"slot": slot.number, "state": state, "battery_serial": battery.serial})
        status = {"online": True, "ts": self.engine.ts(now), "slots": slots}
        self._publish(RecordKind.status, station.code, [status])
        self.engine.push(now + self.config.status_interval_s, STATUS, index)
