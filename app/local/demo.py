"""Seeding the demo network for `swapfleet seed-demo` and the first `swapfleet up`.

Rows are found by their natural keys (codes, VINs, serials) and created only when missing, so
seeding twice changes nothing, and a battery that has moved since the first seed stays where
it is now.
"""

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from app.batteries.custody import record_registration
from app.models import (
    Battery,
    LocationKind,
    Organization,
    OrgRole,
    PackType,
    ReadingSource,
    Slot,
    Station,
    Vehicle,
    VehicleModel,
)


@dataclass(frozen=True)
class DemoPack:
    code: str
    name: str
    chemistry: str
    energy_kwh: float
    capacity_ah: float
    voltage_v: float


@dataclass(frozen=True)
class DemoModel:
    code: str
    name: str
    oem: str
    packs: tuple[str, ...]


@dataclass(frozen=True)
class DemoBattery:
    serial: str
    pack: str
    soc_pct: float
    soh_pct: float
    cycles: float
    manufactured_on: date
    # The maker whose pack it is (a vehicle's battery); None for a station's stock.
    oem: str | None = None


@dataclass(frozen=True)
class DemoStation:
    code: str
    name: str
    operator: str
    latitude: float
    longitude: float
    timezone: str
    slots: int
    target_soc_pct: float
    # Slot number -> the battery in it; the other slots stay free for removed batteries.
    stocked: dict[int, DemoBattery]


@dataclass(frozen=True)
class DemoVehicle:
    vin: str
    model: str
    battery: DemoBattery


@dataclass(frozen=True)
class DemoNetwork:
    """What the demo seeds. Its one definition is the simulated world `swapfleet up` runs
    (simulators.scenarios.demo_config), turned into this by app/cli/demo.py: app/local may not
    import the simulators."""

    organizations: tuple[tuple[str, str, OrgRole], ...]
    owner: str
    packs: tuple[DemoPack, ...]
    models: tuple[DemoModel, ...]
    stations: tuple[DemoStation, ...]
    vehicles: tuple[DemoVehicle, ...]


@dataclass
class SeedSummary:
    created: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def count_created(self, what: str) -> None:
        self.created[what] = self.created.get(what, 0) + 1

    @property
    def created_any(self) -> bool:
        return any(self.created.values())


def seed_demo(session: Session, network: DemoNetwork) -> SeedSummary:
    summary = SeedSummary()
    orgs = {
        code: _organization(session, summary, code, name, role)
        for code, name, role in network.organizations
    }
    packs = {pack.code: _pack_type(session, summary, pack) for pack in network.packs}
    models = {
        model.code: _vehicle_model(session, summary, model, orgs, packs) for model in network.models
    }
    owner = orgs[network.owner]
    for demo_station in network.stations:
        station = _station(session, summary, demo_station, orgs[demo_station.operator])
        slots = _slots(session, summary, station, demo_station.slots)
        for number, demo_battery in sorted(demo_station.stocked.items()):
            oem = orgs[demo_battery.oem] if demo_battery.oem else None
            _battery(session, summary, demo_battery, packs, owner, oem=oem, slot=slots[number])
    for demo_vehicle in network.vehicles:
        model = models[demo_vehicle.model]
        vehicle = _vehicle(session, summary, demo_vehicle, model)
        battery = demo_vehicle.battery
        oem = orgs[battery.oem] if battery.oem else None
        _battery(session, summary, battery, packs, owner, oem=oem, vehicle=vehicle)
    summary.totals = demo_totals(session, network)
    return summary


def demo_totals(session: Session, network: DemoNetwork) -> dict[str, int]:
    """What the demo network holds now (only its own rows, found by their codes)."""
    station_codes = [s.code for s in network.stations]
    serials = [b.serial for s in network.stations for b in s.stocked.values()] + [
        v.battery.serial for v in network.vehicles
    ]

    def count(statement: Select[int]) -> int:
        return session.scalar(statement) or 0

    return {
        "organizations": count(
            select(func.count()).where(Organization.code.in_([o[0] for o in network.organizations]))
        ),
        "pack_types": count(
            select(func.count()).where(PackType.code.in_([p.code for p in network.packs]))
        ),
        "vehicle_models": count(
            select(func.count()).where(VehicleModel.code.in_([m.code for m in network.models]))
        ),
        "stations": count(select(func.count()).where(Station.code.in_(station_codes))),
        "slots": count(
            select(func.count(Slot.id)).join(Station).where(Station.code.in_(station_codes))
        ),
        "vehicles": count(
            select(func.count()).where(Vehicle.vin.in_([v.vin for v in network.vehicles]))
        ),
        "batteries": count(select(func.count()).where(Battery.serial.in_(serials))),
        "batteries_in_slots": count(
            select(func.count()).where(
                Battery.serial.in_(serials), Battery.location_kind == LocationKind.slot
            )
        ),
        "batteries_in_vehicles": count(
            select(func.count()).where(
                Battery.serial.in_(serials), Battery.location_kind == LocationKind.vehicle
            )
        ),
    }


def _organization(
    session: Session, summary: SeedSummary, code: str, name: str, role: OrgRole
) -> Organization:
    org = session.scalar(select(Organization).where(Organization.code == code))
    if org is None:
        org = Organization(code=code, name=name, role=role)
        session.add(org)
        session.flush()
        summary.count_created("organizations")
    return org


def _pack_type(session: Session, summary: SeedSummary, spec: DemoPack) -> PackType:
    pack = session.scalar(select(PackType).where(PackType.code == spec.code))
    if pack is None:
        pack = PackType(
            code=spec.code,
            name=spec.name,
            chemistry=spec.chemistry,
            nominal_energy_kwh=spec.energy_kwh,
            nominal_capacity_ah=spec.capacity_ah,
            nominal_voltage_v=spec.voltage_v,
        )
        session.add(pack)
        session.flush()
        summary.count_created("pack_types")
    return pack


def _vehicle_model(
    session: Session,
    summary: SeedSummary,
    spec: DemoModel,
    orgs: dict[str, Organization],
    packs: dict[str, PackType],
) -> VehicleModel:
    model = session.scalar(select(VehicleModel).where(VehicleModel.code == spec.code))
    if model is None:
        model = VehicleModel(code=spec.code, name=spec.name, oem_id=orgs[spec.oem].id)
        model.pack_types = [packs[code] for code in spec.packs]
        session.add(model)
        session.flush()
        summary.count_created("vehicle_models")
    return model


def _station(
    session: Session, summary: SeedSummary, spec: DemoStation, operator: Organization
) -> Station:
    station = session.scalar(select(Station).where(Station.code == spec.code))
    if station is None:
        station = Station(
            code=spec.code,
            name=spec.name,
            operator_id=operator.id,
            latitude=spec.latitude,
            longitude=spec.longitude,
            timezone=spec.timezone,
            target_soc_pct=spec.target_soc_pct,
        )
        session.add(station)
        session.flush()
        summary.count_created("stations")
    return station


def _slots(session: Session, summary: SeedSummary, station: Station, count: int) -> dict[int, Slot]:
    existing = {
        slot.number: slot
        for slot in session.scalars(select(Slot).where(Slot.station_id == station.id))
    }
    for number in range(1, count + 1):
        if number not in existing:
            existing[number] = Slot(station_id=station.id, number=number)
            session.add(existing[number])
            summary.count_created("slots")
    session.flush()
    return existing


def _vehicle(
    session: Session, summary: SeedSummary, spec: DemoVehicle, model: VehicleModel
) -> Vehicle:
    vehicle = session.scalar(select(Vehicle).where(Vehicle.vin == spec.vin))
    if vehicle is None:
        vehicle = Vehicle(vin=spec.vin, oem_id=model.oem_id, model_id=model.id)
        session.add(vehicle)
        session.flush()
        summary.count_created("vehicles")
    return vehicle


def _battery(
    session: Session,
    summary: SeedSummary,
    spec: DemoBattery,
    packs: dict[str, PackType],
    owner: Organization,
    *,
    oem: Organization | None,
    slot: Slot | None = None,
    vehicle: Vehicle | None = None,
) -> Battery | None:
    if session.scalar(select(Battery.id).where(Battery.serial == spec.serial)) is not None:
        return None
    # The place may have been taken since the first seed (a swap put another battery there);
    # then the battery waits in the warehouse instead of breaking the one-battery-per-place rule.
    if slot is not None and _occupied(session, Battery.slot_id == slot.id):
        slot = None
    if vehicle is not None and _occupied(session, Battery.vehicle_id == vehicle.id):
        vehicle = None
    kind = (
        LocationKind.slot if slot else LocationKind.vehicle if vehicle else LocationKind.warehouse
    )
    battery = Battery(
        serial=spec.serial,
        pack_type_id=packs[spec.pack].id,
        owner_id=owner.id,
        oem_id=oem.id if oem else None,
        manufactured_on=spec.manufactured_on,
        location_kind=kind,
        slot_id=slot.id if slot else None,
        vehicle_id=vehicle.id if vehicle else None,
        location_note="demo stock" if kind is LocationKind.warehouse else None,
        soc_pct=spec.soc_pct,
        soh_pct=spec.soh_pct,
        soh_source=ReadingSource.registration,
        equivalent_full_cycles=spec.cycles,
        cycles_source=ReadingSource.registration,
    )
    session.add(battery)
    session.flush()
    record_registration(session, battery)
    summary.count_created("batteries")
    return battery


def _occupied(session: Session, condition: ColumnElement[bool]) -> bool:
    return session.scalar(select(Battery.id).where(condition)) is not None
