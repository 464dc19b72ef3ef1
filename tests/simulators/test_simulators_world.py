"""The world a fleet is built from comes from its config's catalog, not from fixed tables."""

import random
from collections import defaultdict
from dataclasses import replace

from devices.contract import RecordKind, validate_record
from simulators.battery import PackSpec
from simulators.catalog import TWO_AND_THREE_WHEELERS, Catalog, OemSpec, VehicleModelSpec
from simulators.fleet import Fleet, FleetConfig
from simulators.sinks import InMemorySink
from simulators.world import WorldBuilder

VAN_PACK = PackSpec(
    code="lfp96-100", name="LFP 96 V 100 Ah van pack",
    cells_series=30, cells_parallel=4, cell_capacity_ah=25.0, cell_resistance_mohm=2.5,
    max_charge_c=0.5, thermal_mass_j_per_k=60_000.0, cooling_w_per_k=12.0,
)  # fmt: skip
ONE_VAN = Catalog(
    packs=(VAN_PACK,),
    oems=(OemSpec("vanco", "Vanco Vans"),),
    vehicle_models=(
        VehicleModelSpec("v1", "Vanco V1", "vanco", ("lfp96-100",), 180.0, 30.0, 120.0, 30.0),
    ),
)


def test_a_fleet_is_built_from_the_catalog_in_its_config() -> None:
    config = FleetConfig(stations=2, vehicles=8, days=1.0, seed=3, slots_per_station=6,
                         station_power_kw=60.0, charger_kw=15.0, catalog=ONE_VAN)  # fmt: skip
    sink = InMemorySink()
    fleet = Fleet(config, sink, swap_recorder=sink, truth=sink)
    m = fleet.manifest

    assert [p.code for p in m.pack_types] == ["sim3-lfp96-100"]
    assert [vm.code for vm in m.vehicle_models] == ["sim3-v1"]
    assert {o.code for o in m.organizations if o.role == "oem"} == {"sim3-vanco"}
    assert {b.spec.code for b in fleet.batteries} == {"lfp96-100"}
    assert {b.pack_type_code for b in m.batteries} == {"sim3-lfp96-100"}
    fleet.run()
    assert fleet.stats.swaps > 0
    for kind, records in sink.records.items():
        for _, record in records[:: max(1, len(records) // 500)]:
            validate_record(kind, record)
    assert sink.records[RecordKind.charging]


def test_the_default_catalog_is_the_two_and_three_wheeler_one() -> None:
    default = Fleet(FleetConfig(stations=2, vehicles=6, days=0.1, seed=2), InMemorySink())
    explicit = Fleet(
        replace(FleetConfig(stations=2, vehicles=6, days=0.1, seed=2),
                catalog=TWO_AND_THREE_WHEELERS),
        InMemorySink(),
    )  # fmt: skip
    assert default.manifest == explicit.manifest
    assert len(default.manifest.pack_types) == len(TWO_AND_THREE_WHEELERS.packs) == 3


class OneWeakStation(WorldBuilder):
    """The first station gets only one charger's worth of grid power."""

    def build_stations(self, rng: random.Random) -> None:
        super().build_stations(rng)
        self.world.stations[0].power_kw = self.config.charger_kw


def test_each_station_charges_within_its_own_power_budget() -> None:
    config = FleetConfig(stations=2, vehicles=30, days=1.0, seed=8, slots_per_station=8)
    sink = InMemorySink()
    fleet = Fleet(config, sink, world_builder=OneWeakStation)
    fleet.run()

    power: dict[tuple[str, str], float] = defaultdict(float)
    for code, record in sink.records[RecordKind.charging]:
        power[(code, str(record["ts"]))] += float(record["power_kw"])
    weak, strong = (s.code for s in fleet.stations)
    assert max(p for (code, _), p in power.items() if code == weak) <= config.charger_kw + 0.01
    assert max(p for (code, _), p in power.items() if code == strong) > 2 * config.charger_kw
