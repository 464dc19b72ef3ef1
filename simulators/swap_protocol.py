"""A vehicle at a station: the station picks a pack by the backend's rule, the swap recorder
(the backend) has the last word, and the vehicle queues, retries, moves on or gives up.

The sim installs whichever battery the recorder says it installed; a battery this station does
not hold is a custody mismatch, counted and left for a human.
"""

from __future__ import annotations

import logging

from simulators.config import FleetConfig, FleetStats
from simulators.engine import REJECTION_RETRY, RESUME, WAIT_TIMEOUT, Engine
from simulators.sinks import SwapRecorder, SwapRequest
from simulators.stations import SimSlot, SimStation, Stations
from simulators.vehicles import SimVehicle, Vehicles

log = logging.getLogger(__name__)

MAX_WAIT_S = 1800
REJECTION_RETRY_S = 300
MAX_REJECTIONS = 3


def pick_battery(
    slots: list[SimSlot],
    pack_keys: frozenset[str],
    target_soc_pct: float,
    soh_floor_pct: float,
    reported_soh: dict[str, float],
    reported_cycles: dict[str, float],
) -> SimSlot | None:
    """The backend's allocation rule, applied to what the backend knows (reported readings):
    the highest SoC at or above the target, ties toward the fewest full-equivalent cycles."""
    best: SimSlot | None = None
    best_key = (0.0, 0.0)
    for slot in slots:
        b = slot.battery
        if b is None or b.spec.code not in pack_keys:
            continue
        soc = round(b.soc_pct, 1)
        if soc < target_soc_pct or reported_soh.get(b.serial, 100.0) < soh_floor_pct:
            continue
        key = (soc, -reported_cycles.get(b.serial, 0.0))
        if best is None or key > best_key:
            best, best_key = slot, key
    return best


class SwapProtocol:
    def __init__(
        self,
        config: FleetConfig,
        engine: Engine,
        *,
        stations: Stations,
        vehicles: Vehicles,
        recorder: SwapRecorder,
        reported_soh: dict[str, float],
        reported_cycles: dict[str, float],
        stats: FleetStats,
    ) -> None:
        self.config = config
        self.engine = engine
        self.stations = stations
        self.vehicles = vehicles
        self.recorder = recorder
        self.reported_soh = reported_soh
        self.reported_cycles = reported_cycles
        self.stats = stats
        self._swap_seq = 0
        engine.on(WAIT_TIMEOUT, self.on_wait_timeout)
        engine.on(REJECTION_RETRY, self.on_rejection_retry)

    def arrive(self, vehicle: SimVehicle) -> None:
        station = self.stations.stations[vehicle.to_station]
        now = self.engine.now
        vehicle.driving = False
        vehicle.battery.rest(now, self.engine.ambient_c(now))
        self.vehicles.flush(vehicle)
        if not self._try_swap(station, vehicle):
            vehicle.waiting_since = now
            station.waiting.append(vehicle.index)
            self.stats.waits += 1
            self.engine.push(now + MAX_WAIT_S, WAIT_TIMEOUT, vehicle.index)

    def _try_swap(self, station: SimStation, vehicle: SimVehicle) -> bool:
        """True when the vehicle is done with this station (swapped or given up)."""
        cfg = self.config
        engine = self.engine
        chosen = pick_battery(
            station.slots, vehicle.pack_keys, cfg.target_soc_pct, cfg.soh_floor_pct,
            self.reported_soh, self.reported_cycles,
        )  # fmt: skip
        if chosen is None or chosen.battery is None:
            return False
        now = engine.now
        removed = vehicle.battery
        offered = chosen.battery
        if not chosen.charging:
            offered.rest(now, engine.ambient_c(now))
        self._swap_seq += 1
        request = SwapRequest(
            station_code=station.code,
            vin=vehicle.vin,
            removed_battery_serial=removed.serial,
            removed_soc_pct=round(removed.soc_pct, 1),
            removed_soh_pct=round(removed.bms_soh_pct(), 1),
            # Like the backend: the depleted pack goes into the slot the charged one leaves.
            removed_to_slot=chosen.number,
            proposed_battery_serial=offered.serial,
            proposed_from_slot=chosen.number,
            installed_soc_pct=round(offered.soc_pct, 1),
            installed_soh_pct=self.reported_soh.get(offered.serial, 100.0),
            started_at=engine.ts(now),
            finished_at=engine.ts(now + station.swap_s),
            # The start makes keys of a restarted run (same prefix and seed) new to the backend.
            idempotency_key=f"{cfg.prefix}-{cfg.seed}-{engine.start}-swap-{self._swap_seq}",
        )
        result = self.recorder.record_swap(request)
        if not result.accepted:
            self.stats.swaps_rejected[result.reason_code or "unknown"] += 1
            vehicle.rejections += 1
            if vehicle.rejections >= MAX_REJECTIONS:
                self._give_up(vehicle)
            else:
                engine.push(now + REJECTION_RETRY_S, REJECTION_RETRY, vehicle.index)
            return True
        serial = result.installed_battery_serial or offered.serial
        source = next(
            (s for s in station.slots if s.battery is not None and s.battery.serial == serial),
            None,
        )
        if source is None or source.battery is None:
            # The backend installed a battery this station does not hold: the two views of
            # custody have parted, which a human must look at; keep the physical world as is.
            log.warning(
                "swap_mismatch station=%s vin=%s backend_battery=%s", station.code, vehicle.vin,
                serial,
            )  # fmt: skip
            self.stats.swap_mismatches += 1
            self._give_up(vehicle)
            return True
        installed = source.battery
        if source.charging:
            installed.close_half_cycle()
            source.charging = False
        installed.rest(now, engine.ambient_c(now))
        source.battery = removed
        # The vehicle may have queued since it arrived: its pack sat idle until now.
        removed.rest(now, engine.ambient_c(now))
        removed.close_half_cycle()
        vehicle.battery = installed
        vehicle.rejections = 0
        vehicle.to_station = -1
        vehicle.avoid_station = -1
        vehicle.waiting_since = -1
        # A new day's plan must not start a trip before the swap is over (a second chain of
        # drive steps would then run beside the one RESUME starts).
        vehicle.in_bay = True
        self.stats.swaps += 1
        self.stations.start_charge(station, source)
        engine.push(now + station.swap_s, RESUME, vehicle.index)
        return True

    def _give_up(self, vehicle: SimVehicle) -> None:
        vehicle.to_station = -1
        vehicle.waiting_since = -1
        vehicle.rejections = 0
        vehicle.resume_km = 0.0
        vehicle.driving = False
        self.vehicles.schedule_next_trip(vehicle)

    def on_wait_timeout(self, index: int) -> None:
        vehicle = self.vehicles.vehicles[index]
        now = self.engine.now
        if vehicle.waiting_since < 0 or now - vehicle.waiting_since < MAX_WAIT_S:
            return
        station = self.stations.stations[vehicle.to_station]
        if index in station.waiting:
            station.waiting.remove(index)
        vehicle.waiting_since = -1
        vehicle.avoid_station = station.index
        vehicle.to_station = -1
        self.stats.redirects += 1
        vehicle.battery.rest(now, self.engine.ambient_c(now))
        if self.vehicles.head_to_station(vehicle):
            vehicle.last_t = now
            self.vehicles.next_step(vehicle)
        else:
            self._give_up(vehicle)

    def on_rejection_retry(self, index: int) -> None:
        vehicle = self.vehicles.vehicles[index]
        if vehicle.to_station < 0 or vehicle.driving or vehicle.waiting_since >= 0:
            return
        self.arrive(vehicle)

    def serve_waiting(self, station: SimStation) -> None:
        """Swap the queue at a station in arrival order while packs are ready."""
        while station.waiting:
            vehicle = self.vehicles.vehicles[station.waiting[0]]
            waiting_since = vehicle.waiting_since
            vehicle.waiting_since = -1
            if not self._try_swap(station, vehicle):
                vehicle.waiting_since = waiting_since
                return
            station.waiting.popleft()
