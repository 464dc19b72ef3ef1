"""A discrete-event fleet: swap stations that charge, vehicles that drive and come to swap.

Time is integer seconds since the Unix epoch. Every event sits in one heap ordered by
(time, sequence), and every random draw comes from a generator seeded from the run's seed and
the entity's name, so a seed gives the same run, record for record, at any speed.

The station picks the battery to hand out by the backend's rule (highest SoC at or above the
station's target, ties toward the fewest full-equivalent cycles), but the swap recorder has the
last word: the sim installs whichever battery the backend says it installed.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from heapq import heappush
from typing import Any

from devices.contract import RecordKind
from simulators.battery import Battery, BatteryTraits, FaultMode, PackSpec, cell_ocv
from simulators.catalog import (
    OEM_SPECS,
    PACK_SPECS,
    VEHICLE_MODEL_SPECS,
    BatteryEntry,
    FleetManifest,
    OrganizationEntry,
    PackTypeEntry,
    StationEntry,
    VehicleEntry,
    VehicleModelEntry,
    VehicleModelSpec,
)
from simulators.sinks import (
    AcceptProposedSwaps,
    Record,
    RecordSink,
    SwapRecorder,
    SwapRequest,
    TruthSink,
)

log = logging.getLogger(__name__)

DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)
ROAD_FACTOR = 1.3
SWAP_DURATION_S = 90
MAX_WAIT_S = 1800
REJECTION_RETRY_S = 300
MAX_REJECTIONS = 3

# Trips per hour of the local day: a morning and an evening peak over a daytime base.
HOURLY_DEMAND = (
    0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.2, 2.6, 3.2, 2.2, 1.4, 1.3,
    1.6, 1.4, 1.3, 1.5, 2.0, 2.8, 3.2, 2.4, 1.6, 1.0, 0.6, 0.3,
)  # fmt: skip

_TRIP_START, _DRIVE_STEP, _STATION_TICK, _STATUS, _TRUTH, _RESUME, _WAIT_TIMEOUT = range(7)
_PLAN_DAY, _REJECTION_RETRY, _END = 7, 8, 9


@dataclass(frozen=True)
class FleetConfig:
    stations: int = 20
    vehicles: int = 300
    days: float = 30.0
    seed: int = 1
    start: datetime = DEFAULT_START
    # Prefixes every code, so runs with different prefixes can share one backend.
    code_prefix: str | None = None
    slots_per_station: int = 12
    station_power_kw: float = 24.0
    charger_kw: float = 3.3
    target_soc_pct: float = 90.0
    soh_floor_pct: float = 70.0
    swap_soc_pct: float = 25.0
    faulty_share: float = 0.05
    charge_step_s: int = 60
    telemetry_interval_s: int = 60
    vehicle_batch: int = 10
    status_interval_s: int = 300
    truth_interval_s: int = 86_400
    capacity_max_start_soc_pct: float = 20.0
    initial_age_days_max: float = 540.0
    center_lat: float = 12.9716
    center_lon: float = 77.5946
    radius_km: float = 10.0
    timezone: str = "Asia/Kolkata"
    utc_offset_h: float = 5.5
    ambient_mean_c: float = 27.0
    ambient_swing_c: float = 5.0

    @property
    def prefix(self) -> str:
        return self.code_prefix or f"sim{self.seed}"


@dataclass
class FleetStats:
    sim_time: int = 0
    events: int = 0
    messages: int = 0
    records: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    swaps: int = 0
    swaps_rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    swap_mismatches: int = 0
    waits: int = 0
    redirects: int = 0
    stranded: int = 0
    charges_completed: int = 0

    @property
    def total_records(self) -> int:
        return sum(self.records.values())


class SimSlot:
    __slots__ = ("number", "battery", "charging", "energy_kwh", "start_soc")

    def __init__(self, number: int) -> None:
        self.number = number
        self.battery: Battery | None = None
        self.charging = False
        self.energy_kwh = 0.0
        self.start_soc = 0.0


class SimStation:
    __slots__ = ("index", "code", "name", "lat", "lon", "slots", "waiting", "ticking")

    def __init__(self, index: int, code: str, name: str, lat: float, lon: float) -> None:
        self.index = index
        self.code = code
        self.name = name
        self.lat = lat
        self.lon = lon
        self.slots: list[SimSlot] = []
        self.waiting: deque[int] = deque()
        self.ticking = False


class SimVehicle:
    __slots__ = (
        "index", "vin", "model", "oem_code", "pack_keys", "battery", "lat", "lon", "heading",
        "odometer_km", "rng", "threshold_pct", "km_left", "resume_km", "speed_kmh",
        "to_station", "avoid_station", "driving", "waiting_since", "rejections", "plan",
        "buffer", "last_t", "next_trip_t",
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
        self.waiting_since = -1
        self.rejections = 0
        self.plan: deque[tuple[int, float]] = deque()
        self.buffer: list[Record] = []
        self.last_t = 0
        self.next_trip_t = -1


def pick_battery(
    slots: list[SimSlot],
    pack_keys: frozenset[str],
    target_soc_pct: float,
    soh_floor_pct: float,
    reported_soh: dict[str, float],
    reported_cycles: dict[str, float],
) -> SimSlot | None:
    """The backend's allocation rule, applied to what the backend knows (reported readings)."""
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


class Fleet:
    def __init__(
        self,
        config: FleetConfig,
        sink: RecordSink,
        *,
        swap_recorder: SwapRecorder | None = None,
        truth: TruthSink | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.recorder: SwapRecorder = swap_recorder or AcceptProposedSwaps()
        self.truth = truth
        self.stats = FleetStats()
        self.start = int(config.start.timestamp())
        self.end = self.start + int(config.days * 86_400)
        self.now = self.start
        self._heap: list[tuple[int, int, int, int]] = []
        self._seq = 0
        self._swap_seq = 0
        self._offset_s = int(config.utc_offset_h * 3600)
        self._day_prefix_day = -1
        self._day_prefix = ""
        # Many records of one event share its instant: format it once.
        self._ts_t = -1
        self._ts_s = ""
        self._cos_center = math.cos(math.radians(config.center_lat))
        self._vehicle_batch = config.vehicle_batch
        self._telemetry_interval_s = config.telemetry_interval_s
        minute = 2.0 * math.pi / 1440.0
        self._ambient = [
            config.ambient_mean_c + config.ambient_swing_c * math.cos(minute * (m - 15 * 60))
            for m in range(1440)
        ]
        self.stations: list[SimStation] = []
        self.vehicles: list[SimVehicle] = []
        self.batteries: list[Battery] = []
        self.reported_soh: dict[str, float] = {}
        self.reported_cycles: dict[str, float] = {}
        self.manifest = FleetManifest()
        self._battery_meta: dict[str, date] = {}
        self._build()

    # ---- construction ----------------------------------------------------------------------

    def _rng(self, name: str) -> random.Random:
        return random.Random(f"{self.config.seed}:{name}")

    def _codes(self) -> dict[str, str]:
        p = self.config.prefix
        return {"operator": f"{p}-ops", "owner": f"{p}-bank"}

    def _build(self) -> None:
        cfg = self.config
        p = cfg.prefix
        rng = self._rng("fleet")
        codes = self._codes()
        m = self.manifest
        orgs = m.organizations
        orgs.append(OrganizationEntry(codes["operator"], f"{p} swap network", "operator"))
        orgs.append(OrganizationEntry(codes["owner"], f"{p} battery bank", "owner"))
        for oem in OEM_SPECS:
            orgs.append(OrganizationEntry(f"{p}-{oem.key}", oem.name, "oem"))
        for key, spec in PACK_SPECS.items():
            m.pack_types.append(
                PackTypeEntry(
                    f"{p}-{key}",
                    spec.name,
                    spec.chemistry,
                    round(spec.nominal_energy_kwh, 3),
                    round(spec.nominal_capacity_ah, 3),
                    round(spec.nominal_voltage_v, 3),
                )
            )
        for model in VEHICLE_MODEL_SPECS:
            m.vehicle_models.append(
                VehicleModelEntry(
                    f"{p}-{model.key}",
                    model.name,
                    f"{p}-{model.oem_key}",
                    tuple(f"{p}-{k}" for k in model.pack_keys),
                )
            )
        self._build_stations(rng)
        self._build_vehicles(rng)
        self._stock_stations(rng)
        self._schedule_initial_events()

    def _random_point(self, rng: random.Random, radius_km: float) -> tuple[float, float]:
        cfg = self.config
        r = radius_km * math.sqrt(rng.random())
        a = rng.uniform(0.0, 2.0 * math.pi)
        lat = cfg.center_lat + r * math.cos(a) / 111.0
        lon = cfg.center_lon + r * math.sin(a) / (111.0 * math.cos(math.radians(cfg.center_lat)))
        return lat, lon

    def _build_stations(self, rng: random.Random) -> None:
        cfg = self.config
        for i in range(cfg.stations):
            code = f"{cfg.prefix}-st{i + 1:03d}"
            lat, lon = self._random_point(rng, cfg.radius_km)
            station = SimStation(i, code, f"Swap station {i + 1}", lat, lon)
            station.slots = [SimSlot(n + 1) for n in range(cfg.slots_per_station)]
            self.stations.append(station)
            self.manifest.stations.append(
                StationEntry(
                    code,
                    station.name,
                    self._codes()["operator"],
                    round(lat, 6),
                    round(lon, 6),
                    cfg.timezone,
                    cfg.target_soc_pct,
                    cfg.slots_per_station,
                )
            )

    def _new_battery(self, rng: random.Random, spec: PackSpec, soc: float) -> Battery:
        cfg = self.config
        serial = f"{cfg.prefix}-b{len(self.batteries) + 1:06d}"
        brng = self._rng(serial)
        traits = BatteryTraits.draw(brng, cfg.faulty_share)
        battery = Battery(
            serial, spec, traits, t=self.start, soc_pct=soc, temp_c=cfg.ambient_mean_c,
            seed=cfg.seed,
        )  # fmt: skip
        age_days = brng.uniform(0.0, cfg.initial_age_days_max)
        battery.preage(
            days=age_days,
            efc=age_days * brng.uniform(0.6, 1.6),
            temp_c=cfg.ambient_mean_c,
            soc_pct=60.0,
        )
        self.batteries.append(battery)
        self.reported_soh[serial] = round(battery.soh_pct, 1)
        self.reported_cycles[serial] = round(battery.efc, 1)
        manufactured = (cfg.start - timedelta(days=age_days + 20)).date()
        self._battery_meta[serial] = manufactured
        return battery

    def _build_vehicles(self, rng: random.Random) -> None:
        cfg = self.config
        # ISO 3779 VINs: 17 characters, no I, O or Q; hex digits never contain them.
        tag = f"SFV{zlib.crc32(cfg.prefix.encode()) & 0xFFFF:04X}"
        weights = [model.share for model in VEHICLE_MODEL_SPECS]
        for i in range(cfg.vehicles):
            model = rng.choices(VEHICLE_MODEL_SPECS, weights)[0]
            vin = f"{tag}{i + 1:010d}"
            oem_code = f"{cfg.prefix}-{model.oem_key}"
            vehicle = SimVehicle(i, vin, model, oem_code)
            vehicle.rng = self._rng(vin)
            vrng = vehicle.rng
            pack_key = vrng.choice(model.pack_keys)
            vehicle.battery = self._new_battery(rng, PACK_SPECS[pack_key], vrng.uniform(35.0, 95.0))
            vehicle.threshold_pct = min(40.0, max(12.0, vrng.gauss(cfg.swap_soc_pct, 5.0)))
            if self.stations:
                home = self.stations[vrng.randrange(len(self.stations))]
                vehicle.lat = home.lat + vrng.gauss(0.0, 0.01)
                vehicle.lon = home.lon + vrng.gauss(0.0, 0.01)
            vehicle.heading = vrng.uniform(0.0, 2.0 * math.pi)
            vehicle.odometer_km = round(vrng.uniform(500.0, 30_000.0), 1)
            self.vehicles.append(vehicle)
            self.manifest.vehicles.append(VehicleEntry(vin, oem_code, f"{cfg.prefix}-{model.key}"))
            self.manifest.batteries.append(self._battery_entry(vehicle.battery, oem_code, vin=vin))

    def _battery_entry(
        self,
        battery: Battery,
        oem_code: str,
        *,
        vin: str | None = None,
        station_code: str | None = None,
        slot_number: int | None = None,
    ) -> BatteryEntry:
        p = self.config.prefix
        return BatteryEntry(
            serial=battery.serial,
            pack_type_code=f"{p}-{battery.spec.code}",
            owner_code=self._codes()["owner"],
            oem_code=oem_code,
            manufactured_on=self._battery_meta[battery.serial].isoformat(),
            soc_pct=round(battery.soc_pct, 1),
            soh_pct=round(battery.soh_pct, 1),
            equivalent_full_cycles=round(battery.efc, 1),
            station_code=station_code,
            slot_number=slot_number,
            vin=vin,
        )

    def _stock_stations(self, rng: random.Random) -> None:
        cfg = self.config
        # Stock each pack type in proportion to the vehicles that use it.
        demand: dict[str, float] = defaultdict(float)
        oems_of_pack: dict[str, list[str]] = defaultdict(list)
        for vehicle in self.vehicles:
            for key in vehicle.model.pack_keys:
                demand[key] += 1.0 / len(vehicle.model.pack_keys)
        for model in VEHICLE_MODEL_SPECS:
            for key in model.pack_keys:
                if f"{cfg.prefix}-{model.oem_key}" not in oems_of_pack[key]:
                    oems_of_pack[key].append(f"{cfg.prefix}-{model.oem_key}")
        if not demand:
            demand = dict.fromkeys(PACK_SPECS, 1.0)
            oems_of_pack = {key: [f"{cfg.prefix}-{OEM_SPECS[0].key}"] for key in PACK_SPECS}
        stock = max(0, cfg.slots_per_station - 1)
        counts = _apportion(demand, stock)
        for station in self.stations:
            number = 0
            for key in sorted(counts):
                for _ in range(counts[key]):
                    slot = station.slots[number]
                    number += 1
                    soc = 100.0 if rng.random() < 0.7 else rng.uniform(40.0, 95.0)
                    battery = self._new_battery(rng, PACK_SPECS[key], soc)
                    slot.battery = battery
                    oem_code = rng.choice(oems_of_pack[key])
                    self.manifest.batteries.append(
                        self._battery_entry(
                            battery, oem_code, station_code=station.code, slot_number=slot.number
                        )
                    )
                    if soc < 100.0:
                        self._start_charge(station, slot)

    def _schedule_initial_events(self) -> None:
        cfg = self.config
        for vehicle in self.vehicles:
            self._plan_day(vehicle, self._local_day_start(self.start))
        for station in self.stations:
            offset = station.index * 7 % max(1, cfg.status_interval_s)
            self._push(self.start + offset, _STATUS, station.index)
        self._push(self.start, _TRUTH, 0)
        self._push(self.end, _END, 0)

    # ---- time --------------------------------------------------------------------------------

    def _push(self, t: int, kind: int, index: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, index))

    def _local_day_start(self, t: int) -> int:
        local = t + self._offset_s
        return local - local % 86_400 - self._offset_s

    def ambient_c(self, t: int) -> float:
        return self._ambient[((t + self._offset_s) // 60) % 1440]

    def ts(self, t: int) -> str:
        if t == self._ts_t:
            return self._ts_s
        self._ts_t = t
        self._ts_s = self._format_ts(t)
        return self._ts_s

    def _format_ts(self, t: int) -> str:
        day = t // 86_400
        if day != self._day_prefix_day:
            self._day_prefix_day = day
            self._day_prefix = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%dT")
        return self._day_prefix + _clock(t - day * 86_400)

    # ---- running -----------------------------------------------------------------------------

    def run(
        self,
        *,
        speed: float | None = None,
        flat_out_until: float | None = None,
        progress: Callable[[FleetStats], None] | None = None,
        progress_interval_s: float = 0.25,
        should_stop: Callable[[], bool] | None = None,
    ) -> FleetStats:
        """Run to the end; speed is simulated seconds per wall second (None: flat out).

        Paced, the events before `flat_out_until` (a backfill of history) run flat out first,
        and the run never gets ahead of the real clock: a backend refuses records from the
        future, so once it has caught up with the present it goes on in real time."""
        handlers: tuple[Callable[[int], None], ...] = (
            self._on_trip_start, self._on_drive_step, self._on_station_tick, self._on_status,
            self._on_truth, self._on_resume, self._on_wait_timeout, self._on_plan_day,
            self._on_rejection_retry, self._on_end,
        )  # fmt: skip
        wall_start = time.monotonic()
        last_progress = wall_start
        heap = self._heap
        stats = self.stats
        pop = heapq.heappop
        if speed is None:
            self._run_flat_out(handlers, progress, progress_interval_s, should_stop)
        else:
            paced_from: float = self.start
            ended = False
            if flat_out_until is not None and flat_out_until > self.start:
                ended = self._run_flat_out(
                    handlers, progress, progress_interval_s, should_stop, until=flat_out_until
                )
                paced_from = flat_out_until
                wall_start = time.monotonic()
            while heap and not ended:
                t, _, kind, index = heap[0]
                delay = max(
                    wall_start + (t - paced_from) / speed - time.monotonic(), t - time.time()
                )
                if delay > 0:
                    time.sleep(min(delay, progress_interval_s))
                    if progress is not None:
                        stats.sim_time = self.now
                        progress(stats)
                    if should_stop is not None and should_stop():
                        break
                    continue
                pop(heap)
                self.now = t
                handlers[kind](index)
                stats.events += 1
                if kind == _END:
                    break
                if not stats.events & 1023:
                    wall = time.monotonic()
                    if wall - last_progress >= progress_interval_s:
                        last_progress = wall
                        stats.sim_time = t
                        if progress is not None:
                            progress(stats)
                        if should_stop is not None and should_stop():
                            break
        stats.sim_time = self.now
        if progress is not None:
            progress(stats)
        return stats

    def _run_flat_out(
        self,
        handlers: tuple[Callable[[int], None], ...],
        progress: Callable[[FleetStats], None] | None,
        progress_interval_s: float,
        should_stop: Callable[[], bool] | None,
        until: float = math.inf,
    ) -> bool:
        """The event loop of run() without pacing: the same events in the same order; events
        at or after `until` stay queued. True when the run ended (or was told to stop)."""
        heap = self._heap
        stats = self.stats
        pop = heapq.heappop
        last_progress = time.monotonic()
        events = stats.events
        try:
            while heap and heap[0][0] < until:
                t, _, kind, index = pop(heap)
                self.now = t
                handlers[kind](index)
                events += 1
                if kind == _END:
                    return True
                if not events & 1023:
                    wall = time.monotonic()
                    if wall - last_progress >= progress_interval_s:
                        last_progress = wall
                        stats.events = events
                        stats.sim_time = t
                        if progress is not None:
                            progress(stats)
                        if should_stop is not None and should_stop():
                            return True
        finally:
            stats.events = events
        return not heap

    def _publish(self, kind: RecordKind, identity: str, records: list[Record]) -> None:
        if not records:
            return
        self.sink.publish(kind, identity, records)
        self.stats.messages += 1
        self.stats.records[kind.value] += len(records)

    # ---- vehicles ----------------------------------------------------------------------------

    def _plan_day(self, vehicle: SimVehicle, day_start: int) -> None:
        rng = vehicle.rng
        model = vehicle.model
        daily_km = max(10.0, rng.gauss(model.daily_km_mean, model.daily_km_sd))
        trips = max(2, round(daily_km / 12.0))
        starts = sorted(
            day_start + rng.choices(range(24), HOURLY_DEMAND)[0] * 3600 + rng.randrange(3600)
            for _ in range(trips)
        )
        for start in starts:
            vehicle.plan.append((start, daily_km / trips * rng.uniform(0.6, 1.4)))
        self._push(day_start + 86_400, _PLAN_DAY, vehicle.index)
        self._schedule_next_trip(vehicle)

    def _on_plan_day(self, index: int) -> None:
        vehicle = self.vehicles[index]
        # Trips the vehicle could not make (it was queuing) are dropped, not piled up.
        vehicle.plan.clear()
        self._plan_day(vehicle, self.now)

    def _schedule_next_trip(self, vehicle: SimVehicle) -> None:
        if vehicle.driving or vehicle.to_station >= 0 or vehicle.waiting_since >= 0:
            return
        if vehicle.plan:
            start, _ = vehicle.plan[0]
            # Only the latest scheduled start counts; earlier ones were superseded by a new plan.
            vehicle.next_trip_t = max(start, self.now + 60)
            self._push(vehicle.next_trip_t, _TRIP_START, vehicle.index)

    def _on_trip_start(self, index: int) -> None:
        vehicle = self.vehicles[index]
        if self.now != vehicle.next_trip_t:
            return
        vehicle.next_trip_t = -1
        if vehicle.driving or vehicle.to_station >= 0 or vehicle.waiting_since >= 0:
            return
        if not vehicle.plan:
            return
        _, km = vehicle.plan.popleft()
        vehicle.battery.rest(self.now, self.ambient_c(self.now))
        vehicle.driving = True
        vehicle.km_left = km
        vehicle.last_t = self.now
        if self._should_swap(vehicle) and not self._head_to_station(vehicle):
            vehicle.driving = False
            return
        self._next_step(vehicle)

    def _next_step(self, vehicle: SimVehicle) -> None:
        speed = vehicle.model.mean_speed_kmh * vehicle.rng.uniform(0.5, 1.3)
        vehicle.speed_kmh = speed
        interval = self.config.telemetry_interval_s
        needed = math.ceil(vehicle.km_left / speed * 3600.0)
        self._push(self.now + max(1, min(interval, needed)), _DRIVE_STEP, vehicle.index)

    def _on_drive_step(self, index: int) -> None:
        vehicle = self.vehicles[index]
        now = self.now
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
            cfg = self.config
            heading = vehicle.heading + vehicle.rng.gauss(0.0, 0.4)
            lat = vehicle.lat
            lon = vehicle.lon
            dlat = (lat - cfg.center_lat) * 111.0
            dlon = (lon - cfg.center_lon) * 111.0 * self._cos_center
            if dlat * dlat + dlon * dlon > cfg.radius_km * cfg.radius_km:
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
                "ts": self._ts_s if now == self._ts_t else self.ts(now),
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
            self._flush_vehicle(vehicle)
        if km_left <= 1e-6:
            if vehicle.to_station >= 0:
                self._arrive(vehicle)
            else:
                self._end_trip(vehicle)
            return
        # The first test of _should_swap() inlined: most steps are far above the threshold.
        if (
            vehicle.to_station < 0
            and soc <= vehicle.threshold_pct + 20.0
            and self._should_swap(vehicle)
        ):
            vehicle.resume_km = vehicle.km_left
            if not self._head_to_station(vehicle):
                self._end_trip(vehicle)
                return
            self._next_step(vehicle)
            return
        # _next_step, inlined.
        speed = model.mean_speed_kmh * vehicle.rng.uniform(0.5, 1.3)
        vehicle.speed_kmh = speed
        needed = math.ceil(km_left / speed * 3600.0)
        interval = self._telemetry_interval_s
        self._seq += 1
        step_s = interval if needed > interval else max(1, needed)
        heappush(self._heap, (now + step_s, self._seq, _DRIVE_STEP, index))

    def _flush_vehicle(self, vehicle: SimVehicle) -> None:
        if vehicle.buffer:
            self._publish(RecordKind.vehicle, vehicle.vin, vehicle.buffer)
            vehicle.buffer = []

    def _move(self, vehicle: SimVehicle, dist_km: float) -> None:
        cfg = self.config
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
        dlat = (lat - cfg.center_lat) * 111.0
        dlon = (lon - cfg.center_lon) * 111.0 * self._cos_center
        if dlat * dlat + dlon * dlon > cfg.radius_km * cfg.radius_km:
            heading = math.atan2(-dlon, -dlat)
        vehicle.heading = heading
        lat += dist_km * math.cos(heading) / 111.0
        lon += dist_km * math.sin(heading) / (111.0 * math.cos(math.radians(lat)))
        vehicle.lat = min(90.0, max(-90.0, lat))
        vehicle.lon = min(180.0, max(-180.0, lon))

    def _end_trip(self, vehicle: SimVehicle) -> None:
        vehicle.driving = False
        vehicle.km_left = 0.0
        vehicle.battery.rest(self.now, self.ambient_c(self.now))
        self._flush_vehicle(vehicle)
        self._schedule_next_trip(vehicle)

    def _should_swap(self, vehicle: SimVehicle) -> bool:
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
        if not self.stations:
            return range_km < 3.0
        # Any station close enough settles it (the test only grows with the distance), so
        # the loop stops at the first; the nearest is needed only when none is.
        lat = vehicle.lat
        cos_lat = math.cos(math.radians(lat))
        nearest_sq = math.inf
        for station in self.stations:
            dlat = (station.lat - lat) * 111.0
            dlon = (station.lon - vehicle.lon) * 111.0 * cos_lat
            d_sq = dlat * dlat + dlon * dlon
            if d_sq < nearest_sq:
                nearest_sq = d_sq
                if not range_km < 2.0 * ROAD_FACTOR * math.sqrt(d_sq) + 3.0:
                    return False
        return True

    def _distance_km(self, vehicle: SimVehicle, station: SimStation) -> float:
        dlat = (station.lat - vehicle.lat) * 111.0
        dlon = (station.lon - vehicle.lon) * 111.0 * math.cos(math.radians(vehicle.lat))
        return math.sqrt(dlat * dlat + dlon * dlon)

    def _head_to_station(self, vehicle: SimVehicle) -> bool:
        """Divert to the nearest station stocking the vehicle's pack types."""
        best = -1
        best_d = math.inf
        for station in self.stations:
            if station.index == vehicle.avoid_station:
                continue
            if not any(
                s.battery is not None and s.battery.spec.code in vehicle.pack_keys
                for s in station.slots
            ):
                continue
            d = self._distance_km(vehicle, station)
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

    # ---- swaps -------------------------------------------------------------------------------

    def _arrive(self, vehicle: SimVehicle) -> None:
        station = self.stations[vehicle.to_station]
        vehicle.driving = False
        vehicle.battery.rest(self.now, self.ambient_c(self.now))
        self._flush_vehicle(vehicle)
        if not self._try_swap(station, vehicle):
            vehicle.waiting_since = self.now
            station.waiting.append(vehicle.index)
            self.stats.waits += 1
            self._push(self.now + MAX_WAIT_S, _WAIT_TIMEOUT, vehicle.index)

    def _try_swap(self, station: SimStation, vehicle: SimVehicle) -> bool:
        """True when the vehicle is done with this station (swapped or given up)."""
        cfg = self.config
        chosen = pick_battery(
            station.slots, vehicle.pack_keys, cfg.target_soc_pct, cfg.soh_floor_pct,
            self.reported_soh, self.reported_cycles,
        )  # fmt: skip
        if chosen is None or chosen.battery is None:
            return False
        now = self.now
        removed = vehicle.battery
        offered = chosen.battery
        if not chosen.charging:
            offered.rest(now, self.ambient_c(now))
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
            started_at=self.ts(now),
            finished_at=self.ts(now + SWAP_DURATION_S),
            # The start makes keys of a restarted run (same prefix and seed) new to the backend.
            idempotency_key=f"{cfg.prefix}-{cfg.seed}-{self.start}-swap-{self._swap_seq}",
        )
        result = self.recorder.record_swap(request)
        if not result.accepted:
            self.stats.swaps_rejected[result.reason_code or "unknown"] += 1
            vehicle.rejections += 1
            if vehicle.rejections >= MAX_REJECTIONS:
                self._give_up(vehicle)
            else:
                self._push(now + REJECTION_RETRY_S, _REJECTION_RETRY, vehicle.index)
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
        installed.rest(now, self.ambient_c(now))
        source.battery = removed
        # The vehicle may have queued since it arrived: its pack sat idle until now.
        removed.rest(now, self.ambient_c(now))
        removed.close_half_cycle()
        vehicle.battery = installed
        vehicle.rejections = 0
        vehicle.to_station = -1
        vehicle.avoid_station = -1
        vehicle.waiting_since = -1
        self.stats.swaps += 1
        self._start_charge(station, source)
        self._push(now + SWAP_DURATION_S, _RESUME, vehicle.index)
        return True

    def _give_up(self, vehicle: SimVehicle) -> None:
        vehicle.to_station = -1
        vehicle.waiting_since = -1
        vehicle.rejections = 0
        vehicle.resume_km = 0.0
        vehicle.driving = False
        self._schedule_next_trip(vehicle)

    def _on_resume(self, index: int) -> None:
        vehicle = self.vehicles[index]
        km = vehicle.resume_km
        vehicle.resume_km = 0.0
        if km > 0.05:
            vehicle.battery.rest(self.now, self.ambient_c(self.now))
            vehicle.driving = True
            vehicle.km_left = km
            vehicle.last_t = self.now
            self._next_step(vehicle)
        else:
            self._schedule_next_trip(vehicle)

    def _on_wait_timeout(self, index: int) -> None:
        vehicle = self.vehicles[index]
        if vehicle.waiting_since < 0 or self.now - vehicle.waiting_since < MAX_WAIT_S:
            return
        station = self.stations[vehicle.to_station]
        if index in station.waiting:
            station.waiting.remove(index)
        vehicle.waiting_since = -1
        vehicle.avoid_station = station.index
        vehicle.to_station = -1
        self.stats.redirects += 1
        vehicle.battery.rest(self.now, self.ambient_c(self.now))
        if self._head_to_station(vehicle):
            vehicle.last_t = self.now
            self._next_step(vehicle)
        else:
            self._give_up(vehicle)

    def _on_rejection_retry(self, index: int) -> None:
        vehicle = self.vehicles[index]
        if vehicle.to_station < 0 or vehicle.driving or vehicle.waiting_since >= 0:
            return
        self._arrive(vehicle)

    def _serve_waiting(self, station: SimStation) -> None:
        while station.waiting:
            vehicle = self.vehicles[station.waiting[0]]
            waiting_since = vehicle.waiting_since
            vehicle.waiting_since = -1
            if not self._try_swap(station, vehicle):
                vehicle.waiting_since = waiting_since
                return
            station.waiting.popleft()

    # ---- stations ----------------------------------------------------------------------------

    def _start_charge(self, station: SimStation, slot: SimSlot) -> None:
        battery = slot.battery
        if battery is None:
            return
        slot.charging = True
        slot.energy_kwh = 0.0
        slot.start_soc = battery.soc_pct
        if not station.ticking:
            station.ticking = True
            self._push(self.now + self.config.charge_step_s, _STATION_TICK, station.index)

    def _on_station_tick(self, index: int) -> None:
        cfg = self.config
        station = self.stations[index]
        now = self.now
        ambient = self.ambient_c(now)
        charging = [s for s in station.slots if s.charging and s.battery is not None]
        # Power goes first to the packs closest to ready: they are the ones drivers wait for.
        charging.sort(key=lambda s: -s.battery.soc_pct if s.battery else 0.0)
        budget = cfg.station_power_kw
        charger_kw = cfg.charger_kw
        target = cfg.target_soc_pct
        ts = self.ts(now)
        records: list[Record] = []
        finished: list[SimSlot] = []
        became_ready = False
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
        self._publish(RecordKind.charging, station.code, records)
        for slot in finished:
            self._finish_charge(station, slot)
        if station.waiting and (became_ready or finished):
            self._serve_waiting(station)
        if any(s.charging for s in station.slots):
            self._push(now + cfg.charge_step_s, _STATION_TICK, index)
        else:
            station.ticking = False

    def _finish_charge(self, station: SimStation, slot: SimSlot) -> None:
        battery = slot.battery
        assert battery is not None
        slot.charging = False
        battery.close_half_cycle()
        battery.advance(self.now, 0.0, self.ambient_c(self.now))
        self.stats.charges_completed += 1
        ts = self.ts(self.now)
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
        self._write_truth(battery, event)

    def _on_status(self, index: int) -> None:
        station = self.stations[index]
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
        status = {"online": True, "ts": self.ts(self.now), "slots": slots}
        self._publish(RecordKind.status, station.code, [status])
        self._push(self.now + self.config.status_interval_s, _STATUS, index)

    # ---- ground truth ------------------------------------------------------------------------

    def _write_truth(self, battery: Battery, event: str) -> None:
        if self.truth is None:
            return
        self.truth.write(
            {
                "ts": self.ts(self.now),
                "event": event,
                "battery_serial": battery.serial,
                "pack_type": f"{self.config.prefix}-{battery.spec.code}",
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

    def _on_truth(self, _: int) -> None:
        self._snapshot_truth()
        self._push(self.now + self.config.truth_interval_s, _TRUTH, 0)

    def _snapshot_truth(self) -> None:
        ambient = self.ambient_c(self.now)
        for battery in self.batteries:
            if battery.current_a == 0.0:
                battery.rest(self.now, ambient)
            self._write_truth(battery, "snapshot")

    def _on_end(self, _: int) -> None:
        for vehicle in self.vehicles:
            self._flush_vehicle(vehicle)
        self._snapshot_truth()

    # ---- continuing from the backend's state -----------------------------------------------

    def adopt_custody(
        self, locations: dict[str, dict[str, Any]], soc_pct: dict[str, float] | None = None
    ) -> int:
        """Put batteries where the backend says they are (a restart on the same database).

        locations maps a serial to the backend's location (kind, station_code, slot_number,
        vin); serials not in it stay where the simulation put them. Returns how many batteries
        moved. Call before run().
        """
        by_serial = {b.serial: b for b in self.batteries}
        vehicles = {v.vin: v for v in self.vehicles}
        slots = {(st.code, sl.number): sl for st in self.stations for sl in st.slots}
        placed: dict[str, tuple[str, str | int]] = {}
        for vehicle in self.vehicles:
            placed[vehicle.battery.serial] = ("vehicle", vehicle.vin)
        for station in self.stations:
            for slot in station.slots:
                if slot.battery is not None:
                    placed[slot.battery.serial] = (station.code, slot.number)
        moved = 0
        for serial, location in sorted(locations.items()):
            battery = by_serial.get(serial)
            if battery is None:
                continue
            if soc_pct and serial in soc_pct:
                battery.soc_pct = min(100.0, max(0.0, soc_pct[serial]))
            kind = location.get("kind")
            target: tuple[str, str | int] | None = None
            if kind == "vehicle" and location.get("vin") in vehicles:
                target = ("vehicle", str(location["vin"]))
            elif (
                kind == "slot"
                and (location.get("station_code"), location.get("slot_number")) in slots
            ):
                target = (str(location["station_code"]), int(location["slot_number"]))
            if target is None or placed.get(serial) == target:
                continue
            # Take the battery out of wherever the simulation has it.
            where = placed.pop(serial, None)
            if where is not None and where[0] != "vehicle":
                source = slots[(where[0], int(where[1]))]
                if source.battery is battery:
                    source.battery = None
            if target[0] == "vehicle":
                vehicle = vehicles[str(target[1])]
                vehicle.battery = battery
            else:
                slots[(target[0], int(target[1]))].battery = battery
            placed[serial] = target
            moved += 1
        # A slot now holding a battery the backend has elsewhere is emptied.
        for (code, number), slot in slots.items():
            if slot.battery is not None and placed.get(slot.battery.serial) != (code, number):
                slot.battery = None
        for station in self.stations:
            for slot in station.slots:
                slot.charging = False
                if slot.battery is not None and slot.battery.soc_pct < 100.0:
                    self._start_charge(station, slot)
        for battery in self.batteries:
            self.reported_soh[battery.serial] = round(battery.soh_pct, 1)
        return moved

    # ---- inspection --------------------------------------------------------------------------

    def faulty_serials(self) -> dict[str, FaultMode]:
        return {b.serial: b.traits.fault for b in self.batteries if b.faulty}


_CLOCK: list[str] = []


def _clock(s: int) -> str:
    """`HH:MM:SSZ` of a second of the day, from a table built on first use."""
    if not _CLOCK:
        _CLOCK.extend(
            f"{h:02d}:{m:02d}:{sec:02d}Z" for h in range(24) for m in range(60) for sec in range(60)
        )
    return _CLOCK[s]


def _apportion(weights: dict[str, float], total: int) -> dict[str, int]:
    """Split total into integers by weight (largest remainder), at least one each if possible."""
    keys = sorted(weights)
    wsum = sum(weights.values()) or 1.0
    exact = {k: weights[k] / wsum * total for k in keys}
    counts = {k: int(exact[k]) for k in keys}
    if total >= len(keys):
        for k in keys:
            counts[k] = max(1, counts[k])
    while sum(counts.values()) > total:
        k = max(keys, key=lambda k: counts[k])
        counts[k] -= 1
    rest = sorted(keys, key=lambda k: exact[k] - int(exact[k]), reverse=True)
    i = 0
    while sum(counts.values()) < total and rest:
        counts[rest[i % len(rest)]] += 1
        i += 1
    return counts
