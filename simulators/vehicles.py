"""Vehicles: a day's plan of trips, driving that drains the pack and reports telemetry, and the
rider's decision to head for a station to swap."""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from heapq import heappush
from typing import TYPE_CHECKING

from devices.contract import RecordKind
from simulators.battery import Battery, cell_ocv
from simulators.catalog import VehicleModelSpec
from simulators.config import FleetConfig, FleetStats
from simulators.engine import DRIVE_STEP, PLAN_DAY, RESUME, TRIP_START, Engine
from simulators.sinks import Record
from simulators.stations import SimStation

if TYPE_CHECKING:
    from simulators.swap_protocol import SwapProtocol

Publish = Callable[[RecordKind, str, list[Record]], None]

ROAD_FACTOR = 1.3

# Trips per hour of the local day: a morning and an evening peak over a daytime base.
HOURLY_DEMAND = (
    0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.2, 2.6, 3.2, 2.2, 1.4, 1.3,
    1.6, 1.4, 1.3, 1.5, 2.0, 2.8, 3.2, 2.4, 1.6, 1.0, 0.6, 0.3,
)  # fmt: skip


class SimVehicle:
    __slots__ = (
        "index", "vin", "model", "oem_code", "pack_keys", "battery", "lat", "lon", "heading",
        "odometer_km", "rng", "threshold_pct", "km_left", "resume_km", "speed_kmh",
        "to_station", "avoid_station", "driving", "in_bay", "waiting_since", "rejections", "plan",
        "buffer", "last_t", "next_trip_t", "center_lat", "center_lon", "radius_km",
        "cos_center", "stations",
    )  # fmt: skip

    def __init__(self, index: int, vin: str, model: VehicleModelSpec, oem_code: str) -> None:
        self.index = index
        self.vin = vin
        self.model = model
        self.oem_code = oem_code
        self.pack_keys = frozenset(model.pack_keys)
        self.battery: Battery
        self.lat = 0.0
        self.lon = 0.0
        self.heading = 0.0
        self.odometer_km = 0.0
        self.rng = random.Random()
        self.threshold_pct = 25.0
        self.km_left = 0.0
        self.resume_km = 0.0
        self.speed_kmh = 0.0
        self.to_station = -1
        self.avoid_station = -1
        self.driving = False
        # In a swap bay from the swap until RESUME: neither driving nor free to start a trip.
        self.in_bay = False
        self.waiting_since = -1
        self.rejections = 0
        self.plan: deque[tuple[int, float]] = deque()
        self.buffer: list[Record] = []
        self.last_t = 0
        self.next_trip_t = -1
        # The area the vehicle drives in and the stations it uses: its segment's (a scenario),
        # else the config's area and every station (filled in by Vehicles).
        self.center_lat = math.nan
        self.center_lon = math.nan
        self.radius_km = 0.0
        self.cos_center = 1.0
        self.stations: list[SimStation] | None = None

    def busy(self) -> bool:
        """On the road, in a swap bay, heading to a station or queuing at one: no new trip."""
        return self.driving or self.in_bay or self.to_station >= 0 or self.waiting_since >= 0


class Vehicles:
    def __init__(
        self,
        config: FleetConfig,
        engine: Engine,
        vehicles: list[SimVehicle],
        stations: list[SimStation],
        *,
        publish: Publish,
        stats: FleetStats,
    ) -> None:
        self.config = config
        self.engine = engine
        self.vehicles = vehicles
        self.stations = stations
        self._publish = publish
        self.stats = stats
        # Wired by the fleet: a vehicle that arrives at a station hands over to the protocol.
        self.swaps: SwapProtocol
        # What the drive step, which runs once per record, reads without a lookup chain.
        self._heap = engine.heap
        self._next_seq = engine.next_seq
        self._ambient = engine.ambient
        self._offset_s = engine.offset_s
        self._vehicle_batch = config.vehicle_batch
        self._telemetry_interval_s = config.telemetry_interval_s
        for vehicle in vehicles:
            if math.isnan(vehicle.center_lat):
                vehicle.center_lat = config.center_lat
                vehicle.center_lon = config.center_lon
                vehicle.radius_km = config.radius_km
            vehicle.cos_center = math.cos(math.radians(vehicle.center_lat))
            if vehicle.stations is None:
                vehicle.stations = stations
        engine.on(TRIP_START, self.on_trip_start)
        engine.on(DRIVE_STEP, self.on_drive_step)
        engine.on(RESUME, self.on_resume)
        engine.on(PLAN_DAY, self.on_plan_day)

    # ---- plans -------------------------------------------------------------------------------

    def plan_first_days(self) -> None:
        day_start = self.engine.local_day_start(self.engine.start)
        for vehicle in self.vehicles:
            self._plan_day(vehicle, day_start)

    def _plan_day(self, vehicle: SimVehicle, day_start: int) -> None:
        rng = vehicle.rng
        model = vehicle.model
        duty = model.duty
        hourly: tuple[float, ...]
        if duty is None:
            daily_km = max(10.0, rng.gauss(model.daily_km_mean, model.daily_km_sd))
            trips = max(2, round(daily_km / 12.0))
            hourly = HOURLY_DEMAND
        else:
            # Monday is 0: the epoch's first day was a Thursday.
            weekday = ((day_start + self._offset_s) // 86_400 + 3) % 7
            weekend = weekday >= 5
            mean_km = model.daily_km_mean * (duty.weekend_km_factor if weekend else 1.0)
            daily_km = max(10.0, rng.gauss(mean_km, model.daily_km_sd))
            trips = max(duty.min_trips, round(daily_km / duty.trip_km))
            hourly = duty.weekend_hourly if weekend else duty.weekday_hourly
        starts = sorted(
            day_start + rng.choices(range(24), hourly)[0] * 3600 + rng.randrange(3600)
            for _ in range(trips)
        )
        for start in starts:
            vehicle.plan.append((start, daily_km / trips * rng.uniform(0.6, 1.4)))
        self.engine.push(day_start + 86_400, PLAN_DAY, vehicle.index)
        self.schedule_next_trip(vehicle)

    def on_plan_day(self, index: int) -> None:
        vehicle = self.vehicles[index]
        # Trips the vehicle could not make (it was queuing) are dropped, not piled up.
        vehicle.plan.clear()
        self._plan_day(vehicle, self.engine.now)

    def schedule_next_trip(self, vehicle: SimVehicle) -> None:
        if vehicle.busy():
            return
        if vehicle.plan:
            start, _ = vehicle.plan[0]
            # Only the latest scheduled start counts; earlier ones were superseded by a new plan.
            vehicle.next_trip_t = max(start, self.engine.now + 60)
            self.engine.push(vehicle.next_trip_t, TRIP_START, vehicle.index)

    # ---- driving -----------------------------------------------------------------------------

    def on_trip_start(self, index: int) -> None:
        vehicle = self.vehicles[index]
        now = self.engine.now
        if now != vehicle.next_trip_t:
            return
        vehicle.next_trip_t = -1
        if vehicle.busy():
            return
        if not vehicle.plan:
            return
        _, km = vehicle.plan.popleft()
        vehicle.battery.rest(now, self.engine.ambient_c(now))
        vehicle.driving = True
        vehicle.km_left = km
        vehicle.last_t = now
        if self.should_swap(vehicle) and not self.head_to_station(vehicle):
            vehicle.driving = False
            return
        self.next_step(vehicle)

    def on_resume(self, index: int) -> None:
        """Back on the road after a swap, for what was left of the trip."""
        vehicle = self.vehicles[index]
        now = self.engine.now
        vehicle.in_bay = False
        km = vehicle.resume_km
        vehicle.resume_km = 0.0
        if km > 0.05:
            vehicle.battery.rest(now, self.engine.ambient_c(now))
            vehicle.driving = True
            vehicle.km_left = km
            vehicle.last_t = now
            self.next_step(vehicle)
        else:
            self.schedule_next_trip(vehicle)

    def next_step(self, vehicle: SimVehicle) -> None:
        speed = vehicle.model.mean_speed_kmh * vehicle.rng.uniform(0.5, 1.3)
        vehicle.speed_kmh = speed
        interval = self.config.telemetry_interval_s
        needed = math.ceil(vehicle.km_left / speed * 3600.0)
        self.engine.push(self.engine.now + max(1, min(interval, needed)), DRIVE_STEP, vehicle.index)

    def on_drive_step(self, index: int) -> None:
        vehicle = self.vehicles[index]
        engine = self.engine
        now = engine.now
        dt = now - vehicle.last_t
        vehicle.last_t = now
        model = vehicle.model
        dist = min(vehicle.km_left, vehicle.speed_kmh * dt / 3600.0)
        power_w = (model.consumption_wh_per_km * dist + model.aux_w * dt / 3600.0) * 3600.0 / dt
        battery = vehicle.battery
        ambient = self._ambient[((now + self._offset_s) // 60) % 1440]
        # battery.discharge_power(), inlined.
        soc = battery.soc_pct
        if soc <= 0.0 or power_w <= 0.0:
            battery.advance(now, 0.0, ambient)
            current = 0.0
        else:
            ocv = battery._series * cell_ocv(soc)
            current = power_w / ocv
            current = -(power_w / max(1.0, ocv - current * battery._r_ohm))
            battery.advance(now, current, ambient)
        soc = battery.soc_pct
        if soc <= 0.0:
            self.stats.stranded += 1
        if vehicle.to_station >= 0:
            self._move(vehicle, dist)
        else:
            # _move() off to no particular station, inlined: a random walk kept in the area.
            heading = vehicle.heading + vehicle.rng.gauss(0.0, 0.4)
            lat = vehicle.lat
            lon = vehicle.lon
            dlat = (lat - vehicle.center_lat) * 111.0
            dlon = (lon - vehicle.center_lon) * 111.0 * vehicle.cos_center
            if dlat * dlat + dlon * dlon > vehicle.radius_km * vehicle.radius_km:
                heading = math.atan2(-dlon, -dlat)
            vehicle.heading = heading
            lat += dist * math.cos(heading) / 111.0
            lon += dist * math.sin(heading) / (111.0 * math.cos(math.radians(lat)))
            vehicle.lat = min(90.0, max(-90.0, lat))
            vehicle.lon = min(180.0, max(-180.0, lon))
        odometer = vehicle.odometer_km + dist
        vehicle.odometer_km = odometer
        km_left = vehicle.km_left - dist
        vehicle.km_left = km_left
        # battery.pack_voltage_v() and temp_c_max(), inlined: this runs once per record.
        c = battery.current_a / battery._nom_ah
        buffer = vehicle.buffer
        buffer.append(
            {
                "battery_serial": battery.serial,
                "ts": engine.ts_s if now == engine.ts_t else engine.ts(now),
                "soc_pct": round(soc, 1),
                "odometer_km": round(odometer, 2),
                "pack_voltage_v": round(
                    battery._series * cell_ocv(soc) + battery.current_a * battery._r_ohm, 2
                ),
                "pack_current_a": round(current, 2),
                "temp_c_max": round(
                    battery.temp_c + 0.6 + 1.2 * c * c + battery._hot_extra_c * (0.3 + c * c), 1
                ),
                "lat": round(vehicle.lat, 6),
                "lon": round(vehicle.lon, 6),
            }
        )
        if len(buffer) >= self._vehicle_batch:
            self.flush(vehicle)
        if km_left <= 1e-6:
            if vehicle.to_station >= 0:
                self.swaps.arrive(vehicle)
            else:
                self._end_trip(vehicle)
            return
        # The first test of should_swap() inlined: most steps are far above the threshold.
        if (
            vehicle.to_station < 0
            and soc <= vehicle.threshold_pct + 20.0
            and self.should_swap(vehicle)
        ):
            vehicle.resume_km = vehicle.km_left
            if not self.head_to_station(vehicle):
                self._end_trip(vehicle)
                return
            self.next_step(vehicle)
            return
        # next_step(), inlined.
        speed = model.mean_speed_kmh * vehicle.rng.uniform(0.5, 1.3)
        vehicle.speed_kmh = speed
        needed = math.ceil(km_left / speed * 3600.0)
        interval = self._telemetry_interval_s
        step_s = interval if needed > interval else max(1, needed)
        heappush(self._heap, (now + step_s, self._next_seq(), DRIVE_STEP, index))

    def flush(self, vehicle: SimVehicle) -> None:
        if vehicle.buffer:
            self._publish(RecordKind.vehicle, vehicle.vin, vehicle.buffer)
            vehicle.buffer = []

    def flush_all(self) -> None:
        for vehicle in self.vehicles:
            self.flush(vehicle)

    def _move(self, vehicle: SimVehicle, dist_km: float) -> None:
        if vehicle.to_station >= 0:
            station = self.stations[vehicle.to_station]
            # Road distance is longer than the straight line: cover a share of the remainder.
            share = min(1.0, dist_km / max(vehicle.km_left, 1e-9))
            vehicle.lat += (station.lat - vehicle.lat) * share
            vehicle.lon += (station.lon - vehicle.lon) * share
            return
        heading = vehicle.heading + vehicle.rng.gauss(0.0, 0.4)
        lat = vehicle.lat
        lon = vehicle.lon
        dlat = (lat - vehicle.center_lat) * 111.0
        dlon = (lon - vehicle.center_lon) * 111.0 * vehicle.cos_center
        if dlat * dlat + dlon * dlon > vehicle.radius_km * vehicle.radius_km:
            heading = math.atan2(-dlon, -dlat)
        vehicle.heading = heading
        lat += dist_km * math.cos(heading) / 111.0
        lon += dist_km * math.sin(heading) / (111.0 * math.cos(math.radians(lat)))
        vehicle.lat = min(90.0, max(-90.0, lat))
        vehicle.lon = min(180.0, max(-180.0, lon))

    def _end_trip(self, vehicle: SimVehicle) -> None:
        now = self.engine.now
        vehicle.driving = False
        vehicle.km_left = 0.0
        vehicle.battery.rest(now, self.engine.ambient_c(now))
        self.flush(vehicle)
        self.schedule_next_trip(vehicle)

    # ---- going to swap -----------------------------------------------------------------------

    def should_swap(self, vehicle: SimVehicle) -> bool:
        battery = vehicle.battery
        soc = battery.soc_pct
        if soc <= vehicle.threshold_pct:
            return True
        if soc > vehicle.threshold_pct + 20.0:
            return False
        # Riders watch the range: go now if the nearest station would be a stretch later.
        range_km = (
            (soc - 5.0) / 100.0 * battery.capacity_kwh * 1000.0
            / vehicle.model.consumption_wh_per_km
        )  # fmt: skip
        stations = vehicle.stations
        if not stations:
            return range_km < 3.0
        # Any station close enough settles it (the test only grows with the distance), so
        # the loop stops at the first; the nearest is needed only when none is.
        lat = vehicle.lat
        cos_lat = math.cos(math.radians(lat))
        nearest_sq = math.inf
        for station in stations:
            dlat = (station.lat - lat) * 111.0
            dlon = (station.lon - vehicle.lon) * 111.0 * cos_lat
            d_sq = dlat * dlat + dlon * dlon
            if d_sq < nearest_sq:
                nearest_sq = d_sq
                if not range_km < 2.0 * ROAD_FACTOR * math.sqrt(d_sq) + 3.0:
                    return False
        return True

    def head_to_station(self, vehicle: SimVehicle) -> bool:
        """Divert to the nearest station stocking the vehicle's pack types."""
        best = -1
        best_d = math.inf
        for station in vehicle.stations or ():
            if station.index == vehicle.avoid_station:
                continue
            if not any(
                s.battery is not None and s.battery.spec.code in vehicle.pack_keys
                for s in station.slots
            ):
                continue
            d = _distance_km(vehicle, station)
            if d < best_d:
                best, best_d = station.index, d
        if best < 0:
            return False
        if vehicle.km_left > 0 and vehicle.resume_km <= 0:
            vehicle.resume_km = vehicle.km_left
        vehicle.to_station = best
        vehicle.driving = True
        vehicle.km_left = max(0.05, best_d * ROAD_FACTOR)
        return True


def _distance_km(vehicle: SimVehicle, station: SimStation) -> float:
    dlat = (station.lat - vehicle.lat) * 111.0
    dlon = (station.lon - vehicle.lon) * 111.0 * math.cos(math.radians(vehicle.lat))
    return math.sqrt(dlat * dlat + dlon * dlon)
