"""The fleets swapfleet's users run, as scenarios: heavy trucks, urban vans, passenger cars on a
shared pack standard, and all three together (`mixed`, the default).

Every figure says where it comes from; those marked ASSUMPTION are ours, chosen to be plausible
and consistent with the sourced ones. docs/scenarios.md lists them in tables.

Sources
-------
[GEELY] Geely Technology Group's heavy-truck swap stations, as reported by DigiTimes
    (2022-03-23, "Geely unveils 5-minute battery swapping process") and Carscoops / Pluton
    Logistics (2022): packs of 280 kWh weighing 3.2 t, about 190 km of range per pack, a swap
    in about 5 minutes, 8 packs per station, each recharged to full in about an hour, up to
    50 trucks per station.
[SG1600A] The issue's figure (issue 15): a heavy-truck swap station in Singapore draws
    1,600 A. At 400 V three-phase that is sqrt(3) x 400 V x 1,600 A = 1.11 MVA.
[NIO-PSS3] NIO Power Swap Station 3.0 (NIO Day 2022; autoevolution 2022-12-26, csevtech):
    21 packs (13 in the 2.0 station), a swap in 4 min 40 s door to door, up to 408 swaps a
    day, charged by NIO's bidirectional power modules of 62.5 kW each.
[NIO-PACKS] NIO's 75 kWh and 100 kWh swappable packs (NIO, CnEVPost; ambc.au 2024-06).
[IVECO-EDAILY] IVECO eDaily: 37 kWh battery modules, one to three per van (37, 74 or
    111 kWh); the issue's range for light vans, 35-110 kWh.
[GBT32960] GB/T 32960.3-2016, the Chinese standard for new-energy vehicles' remote data:
    vehicles report their real-time data at least every 30 s.
[CATL-1C] CATL's and CALB's LFP cell datasheets (e.g. CATL's 240 Ah and 280 Ah LFP cells,
    CALB's prismatic cells): standard charge CC 1C to 3.65 V, CV to 0.05C; the C-rate is
    defined on the measured capacity. We allow 1C for every pack here, which is also the
    rate [GEELY]'s one-hour recharge implies. (The 4C of CATL's Shenxing cells needs chargers
    no swap station of these kinds has.)
[CELL-R] Large LFP prismatic cells of 280-304 Ah are specified at about 0.18-0.25 mOhm
    (AC, 1 kHz). ASSUMPTION: a DC resistance of 56 mOhm*Ah divided by the cell's Ah
    (0.2 mOhm at 280 Ah), the same product as the 10 Ah scooter cells of
    simulators/catalog.py (5 mOhm), so that heat per kWh at a C-rate is the same at every
    scale (see simulators.battery.pack_spec).

The chemistry of every pack is LFP: the ageing laws of simulators/battery.py are LFP's
(Naumann 2018/2020, Wang 2011). NIO's 100 kWh pack and the eDaily's modules are NMC in the
field (ASSUMPTION: modelled as LFP of the same energy).

Geography: every scenario runs in one time zone, Asia/Shanghai (ASSUMPTION: the heavy trucks
around the Caofeidian port in Tangshan, as the demo's station; vans and cars in Beijing).
A scenario that spans time zones (NIO's European stations) needs per-segment clocks, which the
engine does not have yet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from simulators.battery import PackSpec, pack_spec
from simulators.catalog import (
    Catalog,
    DutyCycle,
    OemSpec,
    Segment,
    StationKind,
    VehicleModelSpec,
)
from simulators.config import FleetConfig

# ---- packs ---------------------------------------------------------------------------------

# [CELL-R]: cell resistance times cell Ah.
CELL_MOHM_AH = 56.0
# ASSUMPTION: liquid-cooled packs whose cooling brings them back to ambient with a time
# constant of an hour; the vans' smaller packs are air-cooled (an hour and a half).
LIQUID_TAU_S = 3600.0
AIR_TAU_S = 5400.0


def _lfp(code: str, name: str, series: int, parallel: int, cell_ah: float, mass_kg: float,
         tau_s: float) -> PackSpec:  # fmt: skip
    return pack_spec(
        code, name, cells_series=series, cells_parallel=parallel, cell_capacity_ah=cell_ah,
        cell_resistance_mohm=CELL_MOHM_AH / cell_ah, max_charge_c=1.0,  # [CATL-1C]
        mass_kg=mass_kg, cooling_time_constant_s=tau_s,
    )  # fmt: skip


PACKS: dict[str, PackSpec] = {
    # Heavy truck: 280 Ah cells, 157 in series (502 V, the demo's 503.6 V class).
    # HT282: [GEELY]'s 280 kWh and 3.2 t; HT141: half of it (ASSUMPTION, the demo's pack).
    "HT141-LFP": _lfp("HT141-LFP", "141 kWh LFP heavy-truck swap pack", 157, 1, 280.0,
                      1600.0, LIQUID_TAU_S),
    "HT282-LFP": _lfp("HT282-LFP", "282 kWh LFP heavy-truck swap pack", 157, 2, 280.0,
                      3200.0, LIQUID_TAU_S),
    # Light van: [IVECO-EDAILY]'s 37 kWh module and two of them; 100 Ah cells, 116 in series
    # (371 V). Mass: ASSUMPTION, 125 Wh/kg at pack level.
    "LV37-LFP": _lfp("LV37-LFP", "37 kWh LFP light-van swap pack", 116, 1, 100.0, 300.0,
                     AIR_TAU_S),
    "LV74-LFP": _lfp("LV74-LFP", "74 kWh LFP light-van swap pack", 116, 2, 100.0, 600.0,
                     AIR_TAU_S),
    # Passenger car: [NIO-PACKS]' 75 and 100 kWh, one standard for two makers; 104 cells in
    # series (333 V). Mass: ASSUMPTION, NIO's 100 kWh pack is quoted at 555 kg.
    "PC75-LFP": _lfp("PC75-LFP", "75 kWh LFP passenger-car swap pack", 104, 1, 225.0, 480.0,
                     LIQUID_TAU_S),
    "PC100-LFP": _lfp("PC100-LFP", "100 kWh LFP passenger-car swap pack", 104, 1, 300.0,
                      555.0, LIQUID_TAU_S),
}  # fmt: skip

OEMS: dict[str, OemSpec] = {
    oem.key: oem
    for oem in (
        OemSpec("FOTON", "Foton Motor"),
        OemSpec("IVECO", "IVECO"),
        OemSpec("NIO", "NIO"),
        OemSpec("FAW", "FAW Hongqi"),
    )
}

# ---- duty cycles ---------------------------------------------------------------------------

# Heavy trucks on fixed routes (port drayage, steel logistics): two shifts, 06:00-22:00, every
# day; a leg is a port-to-plant run. ASSUMPTION, in the style of Caofeidian's port traffic.
_SHIFTS = (0.1,) * 6 + (1.0,) * 16 + (0.2, 0.1)
# Dispatchers send a truck to swap with a reserve for the leg back (ASSUMPTION: 35 %).
HEAVY_TRUCK_DUTY = DutyCycle(_SHIFTS, _SHIFTS, trip_km=40.0, weekend_km_factor=0.85,
                             min_trips=4, swap_soc_pct=35.0)  # fmt: skip

# Delivery rounds: loading at the depot before a morning peak, a midday lull, an evening peak;
# Saturdays at half the distance, Sundays as Saturdays (ASSUMPTION).
_ROUNDS = (
    0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.8, 2.5, 3.0, 2.5, 1.5, 1.0,
    0.8, 1.0, 1.5, 2.0, 2.8, 3.0, 2.2, 1.0, 0.3, 0.1, 0.0, 0.0,
)  # fmt: skip
_ROUNDS_WEEKEND = (
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.8, 1.5, 2.0, 2.0, 1.5,
    1.0, 1.0, 1.0, 0.8, 0.5, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0,
)  # fmt: skip
URBAN_VAN_DUTY = DutyCycle(_ROUNDS, _ROUNDS_WEEKEND, trip_km=15.0, weekend_km_factor=0.5,
                           min_trips=4)  # fmt: skip

# Commuters on weekdays (to work and back), longer leisure trips around midday at weekends
# (ASSUMPTION).
_COMMUTE = (
    0.05, 0.02, 0.02, 0.02, 0.05, 0.2, 1.0, 3.5, 3.0, 0.8, 0.5, 0.6,
    0.8, 0.6, 0.5, 0.7, 1.5, 3.2, 3.0, 1.2, 0.8, 0.5, 0.3, 0.1,
)  # fmt: skip
_LEISURE = (
    0.05, 0.02, 0.02, 0.02, 0.02, 0.05, 0.2, 0.5, 1.2, 2.0, 2.5, 2.2,
    1.8, 2.0, 2.2, 2.0, 1.8, 1.5, 1.2, 0.8, 0.5, 0.3, 0.2, 0.1,
)  # fmt: skip
PASSENGER_CAR_DUTY = DutyCycle(_COMMUTE, _LEISURE, trip_km=15.0, weekend_km_factor=1.3)

# ---- vehicle models ------------------------------------------------------------------------

MODELS: dict[str, VehicleModelSpec] = {
    model.key: model
    for model in (
        # [GEELY]: 280 kWh for about 190 km is 1.47 kWh/km; aux 3 kW (cab, compressor, pack
        # cooling: ASSUMPTION); speeds and daily distances: ASSUMPTION for port drayage.
        VehicleModelSpec("FOTON-AUMAN-EST-E", "Foton Auman EST 6x4 swap tractor", "FOTON",
                         ("HT141-LFP", "HT282-LFP"), 1470.0, 40.0, 300.0, 50.0, aux_w=3000.0,
                         share=0.5, duty=HEAVY_TRUCK_DUTY),
        VehicleModelSpec("FOTON-AUMAN-GTL-E", "Foton Auman GTL long-haul swap tractor", "FOTON",
                         ("HT282-LFP",), 1400.0, 50.0, 380.0, 50.0, aux_w=3000.0, share=0.25,
                         duty=HEAVY_TRUCK_DUTY),
        VehicleModelSpec("IVECO-S-EWAY-SWAP", "IVECO S-eWay swap tractor", "IVECO",
                         ("HT141-LFP", "HT282-LFP"), 1400.0, 40.0, 280.0, 50.0, aux_w=3000.0,
                         share=0.25, duty=HEAVY_TRUCK_DUTY),
        # Light vans of 3.5 t: about 0.28 kWh/km in city delivery (ASSUMPTION, in line with
        # the eDaily's quoted ranges for its 37-111 kWh [IVECO-EDAILY]).
        VehicleModelSpec("IVECO-EDAILY-35S", "IVECO eDaily 35S panel van", "IVECO",
                         ("LV37-LFP", "LV74-LFP"), 280.0, 25.0, 130.0, 30.0, aux_w=800.0,
                         share=0.5, duty=URBAN_VAN_DUTY),
        VehicleModelSpec("FOTON-TOANO-EV", "Foton Toano EV panel van", "FOTON", ("LV74-LFP",),
                         260.0, 25.0, 140.0, 30.0, aux_w=700.0, share=0.5,
                         duty=URBAN_VAN_DUTY),
        # Passenger cars: one pack standard, two makers. ~0.19 and ~0.16 kWh/km
        # (ASSUMPTION, CLTC-class figures for a mid-size SUV and a saloon).
        VehicleModelSpec("NIO-ES6", "NIO ES6", "NIO", ("PC75-LFP", "PC100-LFP"), 190.0, 35.0,
                         50.0, 20.0, aux_w=500.0, share=0.6, duty=PASSENGER_CAR_DUTY),
        VehicleModelSpec("FAW-HONGQI-EQM5", "Hongqi E-QM5 swap", "FAW", ("PC75-LFP",), 160.0,
                         35.0, 55.0, 20.0, aux_w=400.0, share=0.4, duty=PASSENGER_CAR_DUTY),
    )
}  # fmt: skip

# ---- stations and segments -----------------------------------------------------------------

HEAVY_TRUCK_STATION = StationKind(
    slots=8,  # [GEELY]
    charger_kw=300.0,  # [GEELY]: a 280 kWh pack full in about an hour
    grid_kw=1100.0,  # [SG1600A]
    swap_s=300,  # [GEELY]
    target_soc_pct=90.0,
)
# ASSUMPTION: no published van swap station; sized between the car and the truck stations.
URBAN_VAN_STATION = StationKind(
    slots=10, charger_kw=60.0, grid_kw=400.0, swap_s=180, target_soc_pct=90.0
)
PASSENGER_CAR_STATION = StationKind(
    slots=21,  # [NIO-PSS3]
    charger_kw=62.5,  # [NIO-PSS3]'s power module
    grid_kw=630.0,  # ASSUMPTION: a 630 kVA transformer, a common size for such sites
    swap_s=280,  # [NIO-PSS3]
    target_soc_pct=90.0,
)

HEAVY_TRUCK = Segment(
    "ht", "heavy trucks", "UPOWER", "U Power swap network", "UPW-TS-CFD",
    ("FOTON-AUMAN-EST-E", "FOTON-AUMAN-GTL-E", "IVECO-S-EWAY-SWAP"), HEAVY_TRUCK_STATION,
    center_lat=39.2216, center_lon=118.4598, radius_km=15.0,  # Tangshan Caofeidian port
    station_share=1.0, vehicle_share=12.0,
)  # fmt: skip
URBAN_VAN = Segment(
    "lv", "urban vans", "VANSWAP", "City van swap network", "VSW-BJ-DX",
    ("IVECO-EDAILY-35S", "FOTON-TOANO-EV"), URBAN_VAN_STATION,
    center_lat=39.7269, center_lon=116.3412, radius_km=12.0,  # Beijing Daxing logistics park
    station_share=1.0, vehicle_share=25.0,
)  # fmt: skip
PASSENGER_CAR = Segment(
    "pc", "passenger cars", "NIOPWR", "NIO Power", "NPW-BJ",
    ("NIO-ES6", "FAW-HONGQI-EQM5"), PASSENGER_CAR_STATION,
    center_lat=39.9042, center_lon=116.4074, radius_km=15.0,  # Beijing
    station_share=1.0, vehicle_share=60.0,
)  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    segments: tuple[Segment, ...]
    # A run's size when the command line does not say.
    stations: int
    vehicles: int

    def catalog(self) -> Catalog:
        model_keys = [key for segment in self.segments for key in segment.model_keys]
        models = tuple(MODELS[key] for key in model_keys)
        pack_keys = list(dict.fromkeys(k for model in models for k in model.pack_keys))
        oem_keys = list(dict.fromkeys(model.oem_key for model in models))
        return Catalog(
            packs=tuple(PACKS[key] for key in pack_keys),
            oems=tuple(OEMS[key] for key in oem_keys),
            vehicle_models=models,
            segments=self.segments,
        )

    def with_stations(self, *, slots: int | None = None, grid_kw: float | None = None) -> Scenario:
        """The scenario with every station kind's slot count or grid limit replaced."""
        segments = tuple(
            replace(
                segment,
                station=replace(
                    segment.station,
                    slots=segment.station.slots if slots is None else slots,
                    grid_kw=segment.station.grid_kw if grid_kw is None else grid_kw,
                ),
            )
            for segment in self.segments
        )
        return replace(self, segments=segments)

    def config(self, **overrides: Any) -> FleetConfig:
        """The scenario's FleetConfig; keyword arguments override any field."""
        first = self.segments[0]
        base = FleetConfig(
            stations=self.stations,
            vehicles=self.vehicles,
            catalog=self.catalog(),
            center_lat=first.center_lat,
            center_lon=first.center_lon,
            radius_km=first.radius_km,
            timezone="Asia/Shanghai",
            utc_offset_h=8.0,
            # ASSUMPTION: Tangshan and Beijing average about 12-13 C over a year.
            ambient_mean_c=13.0,
            ambient_swing_c=5.0,
            target_soc_pct=90.0,
            swap_soc_pct=25.0,
            # [GBT32960] for vehicles; a charging sample every 30 s per occupied slot.
            telemetry_interval_s=30,
            charge_step_s=30,
            # Ten 30 s samples a message: one every 5 minutes per driving vehicle.
            vehicle_batch=10,
        )
        return replace(base, **overrides)


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("heavy-truck", "heavy trucks on port and steel-logistics shifts",
                 (HEAVY_TRUCK,), stations=2, vehicles=24),
        Scenario("urban-van", "light vans on delivery rounds", (URBAN_VAN,), stations=2,
                 vehicles=50),
        Scenario("passenger-car", "passenger cars of two makers on one pack standard",
                 (PASSENGER_CAR,), stations=2, vehicles=120),
        Scenario("mixed", "heavy trucks, urban vans and passenger cars",
                 (HEAVY_TRUCK, URBAN_VAN, PASSENGER_CAR), stations=6, vehicles=194),
    )
}  # fmt: skip
DEFAULT_SCENARIO = "mixed"


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}") from None


# The demo network of `swapfleet up` and `swapfleet seed-demo`: the mixed scenario, small, with
# bare codes (UPOWER, UPW-TS-CFD-01, BB-HT282-0001). One definition: the seed registers this
# world's manifest (app/cli/demo.py) and `up`'s simulator runs it (simulators/cli.py), finding
# everything registered by its natural keys.
DEMO_SCENARIO = "mixed"
DEMO_SEED = 1
DEMO_STATIONS = 3
DEMO_VEHICLES = 30
DEMO_PREFIX = ""


def demo_config(**overrides: Any) -> FleetConfig:
    return SCENARIOS[DEMO_SCENARIO].config(
        stations=DEMO_STATIONS, vehicles=DEMO_VEHICLES, seed=DEMO_SEED, code_prefix=DEMO_PREFIX,
        **overrides,
    )  # fmt: skip
