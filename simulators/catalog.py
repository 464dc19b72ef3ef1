"""What a simulated fleet is made of, and the manifest a backend registers before it runs.

The data types of a catalog (packs, makers, vehicle models, their duty cycles, and the
segments of a scenario with their stations) and one small catalog of two- and three-wheeler
LFP packs that the simulator's own unit tests and issue 14's ground-truth tests were tuned on.
The scenarios users run (heavy trucks, vans, cars) are in simulators/scenarios.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulators.battery import PackSpec


@dataclass(frozen=True, slots=True)
class OemSpec:
    key: str
    name: str


@dataclass(frozen=True, slots=True)
class DutyCycle:
    """When and how far a vehicle drives: trips a day are drawn by the hour of the local day
    (weekday and weekend tables), each trip about trip_km long."""

    weekday_hourly: tuple[float, ...]
    weekend_hourly: tuple[float, ...]
    trip_km: float
    # The day's distance at weekends, against a weekday's.
    weekend_km_factor: float = 1.0
    min_trips: int = 2
    # The SoC drivers head for a station at, on average (None: the config's swap_soc_pct).
    swap_soc_pct: float | None = None


@dataclass(frozen=True, slots=True)
class VehicleModelSpec:
    key: str
    name: str
    oem_key: str
    pack_keys: tuple[str, ...]
    consumption_wh_per_km: float
    mean_speed_kmh: float
    daily_km_mean: float
    daily_km_sd: float
    aux_w: float = 40.0
    share: float = 1.0
    # None: the two-wheeler day (simulators.vehicles.HOURLY_DEMAND, 12 km trips).
    duty: DutyCycle | None = None


@dataclass(frozen=True, slots=True)
class StationKind:
    """A segment's swap station: its size, charging power and grid connection."""

    slots: int
    charger_kw: float
    grid_kw: float
    swap_s: int
    target_soc_pct: float


@dataclass(frozen=True, slots=True)
class Segment:
    """One kind of fleet in a scenario (heavy trucks, vans, cars): its vehicle models (keys of
    the catalog's), the operator of its stations, where it runs, and the share of a run's
    stations and vehicles it gets."""

    key: str
    name: str
    operator_key: str
    operator_name: str
    # Station codes are the stem and a number: UPW-TS-CFD-01.
    station_stem: str
    model_keys: tuple[str, ...]
    station: StationKind
    center_lat: float
    center_lon: float
    radius_km: float
    station_share: float
    vehicle_share: float


# Cells are 10 Ah / 25 Ah LFP prismatics; resistances are those of such cells when new.
PACK_SPECS: dict[str, PackSpec] = {
    "lfp48-40": PackSpec(
        code="lfp48-40", name="LFP 48 V 40 Ah scooter pack",
        cells_series=16, cells_parallel=4, cell_capacity_ah=10.0, cell_resistance_mohm=5.0,
        max_charge_c=1.0, thermal_mass_j_per_k=13_000.0, cooling_w_per_k=3.0,
    ),
    "lfp48-60": PackSpec(
        code="lfp48-60", name="LFP 48 V 60 Ah scooter pack",
        cells_series=16, cells_parallel=6, cell_capacity_ah=10.0, cell_resistance_mohm=5.0,
        max_charge_c=0.8, thermal_mass_j_per_k=19_000.0, cooling_w_per_k=4.0,
    ),
    "lfp72-50": PackSpec(
        code="lfp72-50", name="LFP 72 V 50 Ah three-wheeler pack",
        cells_series=24, cells_parallel=2, cell_capacity_ah=25.0, cell_resistance_mohm=2.5,
        max_charge_c=0.7, thermal_mass_j_per_k=26_000.0, cooling_w_per_k=6.0,
    ),
}  # fmt: skip

OEM_SPECS: tuple[OemSpec, ...] = (
    OemSpec("voltra", "Voltra Mobility"),
    OemSpec("amperon", "Amperon Motors"),
    OemSpec("kitecab", "Kitecab Cargo"),
)

VEHICLE_MODEL_SPECS: tuple[VehicleModelSpec, ...] = (
    VehicleModelSpec("vs1", "Voltra S1", "voltra", ("lfp48-40",), 32.0, 28.0, 70.0, 25.0,
                     share=0.35),
    VehicleModelSpec("vs2", "Voltra S2 Long Range", "voltra", ("lfp48-40", "lfp48-60"), 36.0,
                     30.0, 90.0, 30.0, share=0.2),
    VehicleModelSpec("am1", "Amperon Dash", "amperon", ("lfp48-40", "lfp48-60"), 34.0, 26.0,
                     80.0, 25.0, share=0.25),
    VehicleModelSpec("kc3", "Kitecab C3 Cargo", "kitecab", ("lfp72-50",), 65.0, 24.0, 110.0,
                     30.0, aux_w=80.0, share=0.2),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Catalog:
    """The packs, makers and vehicle models a fleet is built from; a scenario brings its own.

    Order matters: the world is drawn from it in this order, so the same catalog and seed give
    the same fleet.
    """

    packs: tuple[PackSpec, ...]
    oems: tuple[OemSpec, ...]
    vehicle_models: tuple[VehicleModelSpec, ...]
    # Empty: one kind of station (the config's) for every vehicle, in one area (the config's).
    segments: tuple[Segment, ...] = ()

    def pack_specs(self) -> dict[str, PackSpec]:
        return {pack.code: pack for pack in self.packs}


TWO_AND_THREE_WHEELERS = Catalog(tuple(PACK_SPECS.values()), OEM_SPECS, VEHICLE_MODEL_SPECS)

# ---- the manifest: what a backend must know before the first swap -------------------------


@dataclass(frozen=True, slots=True)
class OrganizationEntry:
    code: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class PackTypeEntry:
    code: str
    name: str
    chemistry: str
    nominal_energy_kwh: float
    nominal_capacity_ah: float
    nominal_voltage_v: float


@dataclass(frozen=True, slots=True)
class VehicleModelEntry:
    code: str
    name: str
    oem_code: str
    pack_type_codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StationEntry:
    code: str
    name: str
    operator_code: str
    latitude: float
    longitude: float
    timezone: str
    target_soc_pct: float
    slot_count: int


@dataclass(frozen=True, slots=True)
class VehicleEntry:
    vin: str
    oem_code: str
    model_code: str


@dataclass(frozen=True, slots=True)
class BatteryEntry:
    serial: str
    pack_type_code: str
    owner_code: str
    oem_code: str
    manufactured_on: str
    soc_pct: float
    soh_pct: float
    equivalent_full_cycles: float
    station_code: str | None = None
    slot_number: int | None = None
    vin: str | None = None
    # The pack's history before the simulation, which the registrant knows.
    energy_throughput_kwh: float | None = None
    capacity_throughput_ah: float | None = None


@dataclass(slots=True)
class FleetManifest:
    organizations: list[OrganizationEntry] = field(default_factory=list)
    pack_types: list[PackTypeEntry] = field(default_factory=list)
    vehicle_models: list[VehicleModelEntry] = field(default_factory=list)
    stations: list[StationEntry] = field(default_factory=list)
    vehicles: list[VehicleEntry] = field(default_factory=list)
    batteries: list[BatteryEntry] = field(default_factory=list)
