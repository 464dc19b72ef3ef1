"""Building a fleet's world from its config and catalog: organizations, stations, vehicles and
their batteries, the stocked slots, and the manifest a backend registers before the first swap.

Every random draw comes from a generator seeded from the run's seed and a name (the fleet's,
a VIN, a battery serial), in a fixed order, so a seed gives the same world. A scenario with
other vehicles brings its own Catalog (simulators.catalog); one with another layout overrides
a step of WorldBuilder.
"""

from __future__ import annotations

import math
import random
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta

from simulators.battery import Battery, BatteryTraits, PackSpec
from simulators.catalog import (
    BatteryEntry,
    FleetManifest,
    OrganizationEntry,
    PackTypeEntry,
    Segment,
    StationEntry,
    VehicleEntry,
    VehicleModelEntry,
    VehicleModelSpec,
)
from simulators.config import FleetConfig
from simulators.stations import SimSlot, SimStation
from simulators.vehicles import SimVehicle


@dataclass
class World:
    stations: list[SimStation] = field(default_factory=list)
    vehicles: list[SimVehicle] = field(default_factory=list)
    batteries: list[Battery] = field(default_factory=list)
    # What the backend knows of each battery (the last reported readings), which is what
    # the station's choice of a battery goes by.
    reported_soh: dict[str, float] = field(default_factory=dict)
    reported_cycles: dict[str, float] = field(default_factory=dict)
    manifest: FleetManifest = field(default_factory=FleetManifest)
    # Stocked slots whose pack is not full, in stocking order: they charge from the start.
    charging_from_start: list[tuple[SimStation, SimSlot]] = field(default_factory=list)


class WorldBuilder:
    def __init__(self, config: FleetConfig, start: int) -> None:
        self.config = config
        self.start = start
        self.catalog = config.catalog
        self.packs = config.catalog.pack_specs()
        self.world = World()
        self._manufactured: dict[str, date] = {}

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.config.seed}:{name}")

    def codes(self) -> dict[str, str]:
        code = self.config.code
        if self.catalog.segments:
            # Each segment has its operator; the packs belong to one leasing company.
            return {"owner": code(SCENARIO_OWNER[0])}
        return {"operator": code("ops"), "owner": code("bank")}

    def build(self) -> World:
        rng = self.rng("fleet")
        self.add_organizations()
        self.add_pack_types()
        self.add_vehicle_models()
        if self.catalog.segments:
            self.build_segments(rng)
        else:
            self.build_stations(rng)
            self.build_vehicles(rng)
            self.stock_stations(rng)
        return self.world

    # ---- the catalog, as the backend will know it ----------------------------------------------

    def add_organizations(self) -> None:
        p = self.config.prefix
        code = self.config.code
        codes = self.codes()
        orgs = self.world.manifest.organizations
        if self.catalog.segments:
            orgs.append(OrganizationEntry(codes["owner"], SCENARIO_OWNER[1], "owner"))
        else:
            orgs.append(OrganizationEntry(codes["operator"], f"{p} swap network", "operator"))
            orgs.append(OrganizationEntry(codes["owner"], f"{p} battery bank", "owner"))
        for oem in self.catalog.oems:
            orgs.append(OrganizationEntry(code(oem.key), oem.name, "oem"))
        for segment in self.catalog.segments:
            operator = code(segment.operator_key)
            if all(org.code != operator for org in orgs):
                orgs.append(OrganizationEntry(operator, segment.operator_name, "operator"))

    def add_pack_types(self) -> None:
        for key, spec in self.packs.items():
            self.world.manifest.pack_types.append(
                PackTypeEntry(
                    self.config.code(key),
                    spec.name,
                    spec.chemistry,
                    round(spec.nominal_energy_kwh, 3),
                    round(spec.nominal_capacity_ah, 3),
                    round(spec.nominal_voltage_v, 3),
                )
            )

    def add_vehicle_models(self) -> None:
        code = self.config.code
        for model in self.catalog.vehicle_models:
            self.world.manifest.vehicle_models.append(
                VehicleModelEntry(
                    code(model.key),
                    model.name,
                    code(model.oem_key),
                    tuple(code(k) for k in model.pack_keys),
                )
            )

    # ---- stations, vehicles, batteries ---------------------------------------------------------

    def random_point(self, rng: random.Random, radius_km: float) -> tuple[float, float]:
        cfg = self.config
        r = radius_km * math.sqrt(rng.random())
        a = rng.uniform(0.0, 2.0 * math.pi)
        lat = cfg.center_lat + r * math.cos(a) / 111.0
        lon = cfg.center_lon + r * math.sin(a) / (111.0 * math.cos(math.radians(cfg.center_lat)))
        return lat, lon

    def build_stations(self, rng: random.Random) -> None:
        cfg = self.config
        for i in range(cfg.stations):
            code = f"{cfg.prefix}-st{i + 1:03d}"
            lat, lon = self.random_point(rng, cfg.radius_km)
            station = SimStation(
                i, code, f"Swap station {i + 1}", lat, lon,
                power_kw=cfg.station_power_kw, charger_kw=cfg.charger_kw,
            )  # fmt: skip
            station.slots = [SimSlot(n + 1) for n in range(cfg.slots_per_station)]
            self.world.stations.append(station)
            self.world.manifest.stations.append(
                StationEntry(
                    code,
                    station.name,
                    self.codes()["operator"],
                    round(lat, 6),
                    round(lon, 6),
                    cfg.timezone,
                    cfg.target_soc_pct,
                    len(station.slots),
                )
            )

    def new_battery(self, spec: PackSpec, soc: float) -> Battery:
        cfg = self.config
        world = self.world
        number = len(world.batteries) + 1
        if self.catalog.segments:
            # BB-HT282-0012: the leasing company's pack number, as fleets label them.
            serial = cfg.code(f"BB-{spec.code.split('-')[0]}-{number:04d}")
        else:
            serial = f"{cfg.prefix}-b{number:06d}"
        brng = self.rng(serial)
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
        world.batteries.append(battery)
        world.reported_soh[serial] = round(battery.soh_pct, 1)
        world.reported_cycles[serial] = round(battery.efc, 1)
        self._manufactured[serial] = (cfg.start - timedelta(days=age_days + 20)).date()
        return battery

    def build_vehicles(self, rng: random.Random) -> None:
        cfg = self.config
        # ISO 3779 VINs: 17 characters, no I, O or Q; hex digits never contain them.
        tag = f"SFV{zlib.crc32(cfg.prefix.encode()) & 0xFFFF:04X}"
        models = self.catalog.vehicle_models
        weights = [model.share for model in models]
        for i in range(cfg.vehicles):
            model = rng.choices(models, weights)[0]
            self.new_vehicle(rng, model, f"{tag}{i + 1:010d}", self.world.stations)

    def new_vehicle(
        self, rng: random.Random, model: VehicleModelSpec, vin: str, stations: list[SimStation]
    ) -> SimVehicle:
        """A vehicle of `model` with its pack, based at one of `stations`."""
        cfg = self.config
        world = self.world
        oem_code = cfg.code(model.oem_key)
        vehicle = SimVehicle(len(world.vehicles), vin, model, oem_code)
        vehicle.rng = self.rng(vin)
        vrng = vehicle.rng
        pack_key = vrng.choice(model.pack_keys)
        vehicle.battery = self.new_battery(self.packs[pack_key], vrng.uniform(35.0, 95.0))
        swap_soc = cfg.swap_soc_pct
        if model.duty is not None and model.duty.swap_soc_pct is not None:
            swap_soc = model.duty.swap_soc_pct
        vehicle.threshold_pct = min(40.0, max(12.0, vrng.gauss(swap_soc, 5.0)))
        if stations:
            home = stations[vrng.randrange(len(stations))]
            vehicle.lat = home.lat + vrng.gauss(0.0, 0.01)
            vehicle.lon = home.lon + vrng.gauss(0.0, 0.01)
        vehicle.heading = vrng.uniform(0.0, 2.0 * math.pi)
        vehicle.odometer_km = round(vrng.uniform(500.0, 30_000.0), 1)
        world.vehicles.append(vehicle)
        world.manifest.vehicles.append(VehicleEntry(vin, oem_code, cfg.code(model.key)))
        world.manifest.batteries.append(self.battery_entry(vehicle.battery, oem_code, vin=vin))
        return vehicle

    def battery_entry(
        self,
        battery: Battery,
        oem_code: str,
        *,
        vin: str | None = None,
        station_code: str | None = None,
        slot_number: int | None = None,
    ) -> BatteryEntry:
        return BatteryEntry(
            serial=battery.serial,
            pack_type_code=self.config.code(battery.spec.code),
            owner_code=self.codes()["owner"],
            oem_code=oem_code,
            manufactured_on=self._manufactured[battery.serial].isoformat(),
            soc_pct=round(battery.soc_pct, 1),
            soh_pct=round(battery.soh_pct, 1),
            equivalent_full_cycles=round(battery.efc, 1),
            station_code=station_code,
            slot_number=slot_number,
            vin=vin,
            # A full-equivalent cycle is twice the nominal capacity through the pack, half of
            # it charged.
            energy_throughput_kwh=round(
                battery.efc
                * battery.spec.nominal_capacity_ah
                * battery.spec.nominal_voltage_v
                / 1000.0,
                1,
            ),
            capacity_throughput_ah=round(battery.efc * 2.0 * battery.spec.nominal_capacity_ah, 1),
        )

    def stock_stations(self, rng: random.Random) -> None:
        self.stock(rng, self.world.stations, self.world.vehicles, self.catalog.vehicle_models)

    def stock(
        self,
        rng: random.Random,
        stations: list[SimStation],
        vehicles: list[SimVehicle],
        models: tuple[VehicleModelSpec, ...] | list[VehicleModelSpec],
    ) -> None:
        """Stock `stations` with the packs `models` take, each pack type in proportion to the
        `vehicles` that use it, all slots but one."""
        cfg = self.config
        world = self.world
        demand: dict[str, float] = defaultdict(float)
        oems_of_pack: dict[str, list[str]] = defaultdict(list)
        for vehicle in vehicles:
            for key in vehicle.model.pack_keys:
                demand[key] += 1.0 / len(vehicle.model.pack_keys)
        for model in models:
            for key in model.pack_keys:
                if cfg.code(model.oem_key) not in oems_of_pack[key]:
                    oems_of_pack[key].append(cfg.code(model.oem_key))
        if not demand:
            packs = self.packs if not self.catalog.segments else {
                key: None for model in models for key in model.pack_keys
            }  # fmt: skip
            demand = dict.fromkeys(packs, 1.0)
            first_oem = cfg.code(self.catalog.oems[0].key)
            if self.catalog.segments and models:
                first_oem = cfg.code(models[0].oem_key)
            oems_of_pack = {key: [first_oem] for key in packs}
        for station in stations:
            counts = apportion(demand, max(0, len(station.slots) - 1))
            number = 0
            for key in sorted(counts):
                for _ in range(counts[key]):
                    slot = station.slots[number]
                    number += 1
                    soc = 100.0 if rng.random() < 0.7 else rng.uniform(40.0, 95.0)
                    battery = self.new_battery(self.packs[key], soc)
                    slot.battery = battery
                    oem_code = rng.choice(oems_of_pack[key])
                    world.manifest.batteries.append(
                        self.battery_entry(
                            battery, oem_code, station_code=station.code, slot_number=slot.number
                        )
                    )
                    if soc < 100.0:
                        world.charging_from_start.append((station, slot))

    def build_segments(self, rng: random.Random) -> None:
        _segments_build(self, rng)


# ---- a scenario's world: segments, each with its stations, area and vehicles ------------------


@dataclass
class _SegmentPlan:
    segment: Segment
    stations: list[SimStation] = field(default_factory=list)
    vehicles: list[SimVehicle] = field(default_factory=list)


# The leasing company that owns a scenario's packs (code, name), as in the demo network.
SCENARIO_OWNER = ("BATBANK", "Battery Bank Leasing")


def _segments_build(builder: WorldBuilder, rng: random.Random) -> None:
    """build_stations, build_vehicles and stock_stations for a catalog with segments: the
    run's stations and vehicles are split among the segments by their shares; each segment's
    stations have its size and power, sit in its area and stock its packs; its vehicles drive
    in its area and use only its stations."""
    cfg = builder.config
    world = builder.world
    segments = builder.catalog.segments
    keys = [f"{i:02d}" for i in range(len(segments))]
    station_counts = apportion({k: s.station_share for k, s in zip(keys, segments, strict=True)},
                               cfg.stations)  # fmt: skip
    # A segment left without a station (fewer stations than segments) gets no vehicles.
    served = [k for k in keys if station_counts[k]] or keys
    vehicle_counts = dict.fromkeys(keys, 0) | apportion(
        {k: s.vehicle_share for k, s in zip(keys, segments, strict=True) if k in served},
        cfg.vehicles,
    )
    models = {model.key: model for model in builder.catalog.vehicle_models}
    plans = [_SegmentPlan(segment) for segment in segments]
    for key, plan in zip(keys, plans, strict=True):
        segment = plan.segment
        kind = segment.station
        for n in range(station_counts[key]):
            code = cfg.code(f"{segment.station_stem}-{n + 1:02d}")
            lat, lon = _point(rng, segment.center_lat, segment.center_lon, segment.radius_km)
            station = SimStation(
                len(world.stations), code, f"{segment.operator_name} {segment.name} {n + 1}",
                lat, lon, power_kw=kind.grid_kw, charger_kw=kind.charger_kw, swap_s=kind.swap_s,
            )  # fmt: skip
            station.slots = [SimSlot(i + 1) for i in range(kind.slots)]
            world.stations.append(station)
            plan.stations.append(station)
            world.manifest.stations.append(
                StationEntry(
                    code, station.name, cfg.code(segment.operator_key), round(lat, 6),
                    round(lon, 6), cfg.timezone, kind.target_soc_pct, kind.slots,
                )
            )  # fmt: skip
    tag = f"SFV{zlib.crc32(cfg.prefix.encode()) & 0xFFFF:04X}"
    for key, plan in zip(keys, plans, strict=True):
        segment = plan.segment
        seg_models = [models[k] for k in segment.model_keys]
        weights = [model.share for model in seg_models]
        for _ in range(vehicle_counts[key]):
            model = rng.choices(seg_models, weights)[0]
            vehicle = builder.new_vehicle(rng, model, f"{tag}{len(world.vehicles) + 1:010d}",
                                          plan.stations)  # fmt: skip
            vehicle.center_lat = segment.center_lat
            vehicle.center_lon = segment.center_lon
            vehicle.radius_km = segment.radius_km
            vehicle.stations = plan.stations
            plan.vehicles.append(vehicle)
    for plan in plans:
        builder.stock(rng, plan.stations, plan.vehicles,
                      [models[k] for k in plan.segment.model_keys])  # fmt: skip


def _point(
    rng: random.Random, center_lat: float, center_lon: float, radius_km: float
) -> tuple[float, float]:
    r = radius_km * math.sqrt(rng.random())
    a = rng.uniform(0.0, 2.0 * math.pi)
    lat = center_lat + r * math.cos(a) / 111.0
    lon = center_lon + r * math.sin(a) / (111.0 * math.cos(math.radians(center_lat)))
    return lat, lon


def apportion(weights: dict[str, float], total: int) -> dict[str, int]:
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
