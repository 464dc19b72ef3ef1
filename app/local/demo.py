"""A small demo network for `swapfleet seed-demo` and the first `swapfleet up`.

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
    # Charged batteries fill slots 1..n; the remaining slots stay free for removed batteries.
    charged: tuple[DemoBattery, ...]


@dataclass(frozen=True)
class DemoVehicle:
    vin: str
    model: str
    battery: DemoBattery


BATTERY_OWNER = "BATBANK"

ORGANIZATIONS: tuple[tuple[str, str, OrgRole], ...] = (
    ("UPOWER", "U-Power Swap Networks", OrgRole.operator),
    ("NIOPWR", "NIO Power Europe", OrgRole.operator),
    (BATTERY_OWNER, "Battery Bank Leasing", OrgRole.owner),
    ("FOTON", "Foton Motor", OrgRole.oem),
    ("IVECO", "IVECO", OrgRole.oem),
)

PACKS = (
    DemoPack("HT141-LFP", "141 kWh LFP heavy-truck swap pack", "LFP", 141.0, 280.0, 503.6),
    DemoPack("HT282-LFP", "282 kWh LFP heavy-truck swap pack", "LFP", 282.0, 560.0, 503.6),
)

MODELS = (
    DemoModel(
        "FOTON-AUMAN-EST-E", "Foton Auman EST 6x4 swap tractor", "FOTON", ("HT141-LFP", "HT282-LFP")
    ),
    DemoModel(
        "FOTON-AUMAN-GTL-E", "Foton Auman GTL long-haul swap tractor", "FOTON", ("HT282-LFP",)
    ),
    # HT141-LFP is served by both OEMs: one battery standard across brands.
    DemoModel("IVECO-S-EWAY-SWAP", "IVECO S-eWay swap tractor", "IVECO", ("HT141-LFP",)),
)


def _b(serial: str, soc: float, soh: float, cycles: float) -> DemoBattery:
    pack = "HT282-LFP" if "HT282" in serial else "HT141-LFP"
    return DemoBattery(serial, pack, soc, soh, cycles)


STATIONS = (
    DemoStation(
        code="UPW-BJ-DAXING",
        name="Beijing Daxing Logistics Park",
        operator="UPOWER",
        latitude=39.7269,
        longitude=116.3412,
        timezone="Asia/Shanghai",
        slots=7,
        target_soc_pct=90.0,
        charged=(
            _b("BB-HT141-0001", 100.0, 98.1, 112.0),
            _b("BB-HT141-0002", 97.5, 96.4, 240.5),
            _b("BB-HT141-0003", 97.5, 95.0, 180.0),
            _b("BB-HT282-0001", 99.0, 97.7, 95.0),
            _b("BB-HT282-0002", 92.0, 94.2, 310.0),
        ),
    ),
    DemoStation(
        code="UPW-TS-CAOFEIDIAN",
        name="Tangshan Caofeidian Port",
        operator="UPOWER",
        latitude=39.2216,
        longitude=118.4598,
        timezone="Asia/Shanghai",
        slots=5,
        target_soc_pct=90.0,
        charged=(
            _b("BB-HT141-0004", 95.0, 97.0, 150.0),
            _b("BB-HT282-0003", 98.0, 96.0, 201.0),
            _b("BB-HT282-0004", 93.5, 91.8, 420.0),
        ),
    ),
    DemoStation(
        code="NPW-NL-MAASVLAKTE",
        name="Rotterdam Maasvlakte",
        operator="NIOPWR",
        latitude=51.9553,
        longitude=4.0433,
        timezone="Europe/Amsterdam",
        slots=6,
        target_soc_pct=85.0,
        charged=(
            _b("BB-HT141-0005", 96.0, 99.0, 40.0),
            _b("BB-HT141-0006", 88.0, 97.5, 75.0),
            _b("BB-HT141-0007", 99.5, 92.3, 380.0),
            _b("BB-HT141-0008", 91.0, 98.8, 12.0),
        ),
    ),
    DemoStation(
        code="NPW-DE-DUISBURG",
        name="Duisburg Logport",
        operator="NIOPWR",
        latitude=51.4129,
        longitude=6.7249,
        timezone="Europe/Berlin",
        slots=6,
        target_soc_pct=90.0,
        charged=(
            _b("BB-HT141-0009", 94.0, 96.9, 160.0),
            _b("BB-HT141-0010", 100.0, 95.5, 222.0),
            _b("BB-HT141-0011", 90.5, 97.1, 88.0),
        ),
    ),
)

VEHICLES = (
    DemoVehicle("LVBV6PEC0R0000101", "FOTON-AUMAN-EST-E", _b("BB-HT141-0101", 18.0, 96.2, 230.0)),
    DemoVehicle("LVBV6PEC0R0000102", "FOTON-AUMAN-EST-E", _b("BB-HT282-0102", 24.5, 95.1, 190.0)),
    DemoVehicle("LVBV6PEC0R0000103", "FOTON-AUMAN-GTL-E", _b("BB-HT282-0103", 31.0, 97.4, 140.0)),
    DemoVehicle("LVBV6PEC0R0000104", "FOTON-AUMAN-EST-E", _b("BB-HT141-0104", 12.5, 93.9, 305.0)),
    DemoVehicle("ZCFCE35A0R0000201", "IVECO-S-EWAY-SWAP", _b("BB-HT141-0201", 21.0, 98.0, 60.0)),
    DemoVehicle("ZCFCE35A0R0000202", "IVECO-S-EWAY-SWAP", _b("BB-HT141-0202", 35.5, 97.2, 85.0)),
    DemoVehicle("ZCFCE35A0R0000203", "IVECO-S-EWAY-SWAP", _b("BB-HT141-0203", 16.0, 94.6, 270.0)),
)

# A fixed date keeps the seed deterministic; the batteries are "made" in the same batch.
MANUFACTURED_ON = date(2025, 3, 1)


@dataclass
class SeedSummary:
    created: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def count_created(self, what: str) -> None:
        self.created[what] = self.created.get(what, 0) + 1

    @property
    def created_any(self) -> bool:
        return any(self.created.values())


def seed_demo(session: Session) -> SeedSummary:
    summary = SeedSummary()
    orgs = {
        code: _organization(session, summary, code, name, role)
        for code, name, role in ORGANIZATIONS
    }
    packs = {pack.code: _pack_type(session, summary, pack) for pack in PACKS}
    models = {model.code: _vehicle_model(session, summary, model, orgs, packs) for model in MODELS}
    owner = orgs[BATTERY_OWNER]
    for demo_station in STATIONS:
        station = _station(session, summary, demo_station, orgs[demo_station.operator])
        slots = _slots(session, summary, station, demo_station.slots)
        for number, demo_battery in enumerate(demo_station.charged, start=1):
            _battery(session, summary, demo_battery, packs, owner, oem=None, slot=slots[number])
    for demo_vehicle in VEHICLES:
        model = models[demo_vehicle.model]
        vehicle = _vehicle(session, summary, demo_vehicle, model)
        oem = orgs[_model_spec(demo_vehicle.model).oem]
        _battery(session, summary, demo_vehicle.battery, packs, owner, oem=oem, vehicle=vehicle)
    summary.totals = demo_totals(session)
    return summary


def demo_totals(session: Session) -> dict[str, int]:
    """What the demo network holds now (only its own rows, found by their codes)."""
    station_codes = [s.code for s in STATIONS]
    serials = [b.serial for s in STATIONS for b in s.charged] + [v.battery.serial for v in VEHICLES]

    def count(statement: Select[int]) -> int:
        return session.scalar(statement) or 0

    return {
        "organizations": count(
            select(func.count()).where(Organization.code.in_([o[0] for o in ORGANIZATIONS]))
        ),
        "pack_types": count(select(func.count()).where(PackType.code.in_([p.code for p in PACKS]))),
        "vehicle_models": count(
            select(func.count()).where(VehicleModel.code.in_([m.code for m in MODELS]))
        ),
        "stations": count(select(func.count()).where(Station.code.in_(station_codes))),
        "slots": count(
            select(func.count(Slot.id)).join(Station).where(Station.code.in_(station_codes))
        ),
        "vehicles": count(select(func.count()).where(Vehicle.vin.in_([v.vin for v in VEHICLES]))),
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


def _model_spec(code: str) -> DemoModel:
    return next(m for m in MODELS if m.code == code)


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
        manufactured_on=MANUFACTURED_ON,
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
