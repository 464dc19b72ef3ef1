from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    RowMapping,
    Select,
    String,
    bindparam,
    case,
    exists,
    null,
    select,
    tuple_,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from app.auth.service import Principal
from app.batteries.schemas import BatteryFilter
from app.core.db import NamedRow, Prepared, Statements, prepare
from app.core.keyset import after_cursor
from app.models import (
    Battery,
    CustodyEvent,
    Organization,
    PackType,
    Slot,
    Station,
    Vehicle,
    vehicle_model_pack_types,
)
from app.vehicles import repository as vehicle_repo

# A column or attribute that holds a battery serial (batteries, swaps, vehicle telemetry).
SerialColumn = ColumnElement[Any] | InstrumentedAttribute[Any]

# An OEM viewer's organization id, or a parameter that will hold it; None for the others.
ViewerOem = int | BindParameter[int] | None

OwnerOrg = aliased(Organization, name="owner_org")
OemOrg = aliased(Organization, name="oem_org")


def readable_serial(serial: SerialColumn, viewer_oem_id: ViewerOem) -> SerialColumn:
    """A battery serial as the viewer may read it, for every route that names a battery.

    An OEM key (viewer_oem_id set) reads the serials of its own program's batteries only;
    any other serial, or one that names no battery, reads as null, so that an OEM learns
    neither which foreign battery sits in its truck nor that a guessed serial exists. Admin
    and operator keys (None) read every serial.
    """
    if viewer_oem_id is None:
        return serial
    # An alias, so that the subquery never correlates with a batteries table outside it.
    candidate = aliased(Battery)
    own = exists().where(candidate.serial == serial, candidate.oem_id == viewer_oem_id)
    return case((own, serial), else_=null())


def readable_batteries(viewer_oem_id: ViewerOem) -> list[ColumnElement[bool]]:
    """Which batteries a key reads, the one rule of every battery route: an OEM key
    (viewer_oem_id set, see Principal.oem_scope) its own program's; admin and operator keys
    every battery. Another OEM's battery is then a 404, as a missing one."""
    return [] if viewer_oem_id is None else [Battery.oem_id == viewer_oem_id]


def readable_statement(principal: Principal) -> Select[*tuple[Any, ...]]:
    """The batteries the key may read, as the battery views of the list and read routes."""
    scope = principal.oem_scope
    return _battery_view(scope).where(*readable_batteries(scope))


def _battery_view(viewer_oem_id: ViewerOem = None) -> Select[*tuple[Any, ...]]:
    """One row per battery with its codes and location resolved by joins, so lists stay O(1)
    queries however many batteries they show."""
    return (
        select(
            Battery.serial,
            PackType.code.label("pack_type_code"),
            OwnerOrg.code.label("owner_code"),
            OemOrg.code.label("oem_code"),
            Battery.manufactured_on,
            Battery.state,
            Battery.location_kind,
            Station.code.label("station_code"),
            Slot.number.label("slot_number"),
            vehicle_repo.readable_vin(Vehicle.vin, viewer_oem_id).label("vin"),
            Battery.location_note,
            Battery.soc_pct,
            Battery.soh_pct,
            Battery.equivalent_full_cycles,
            Battery.readings_at,
            Battery.soc_measured_at,
            Battery.soh_measured_at,
            Battery.soh_source,
            Battery.cycles_measured_at,
            Battery.cycles_source,
        )
        .join(PackType, PackType.id == Battery.pack_type_id)
        .join(OwnerOrg, OwnerOrg.id == Battery.owner_id)
        .outerjoin(OemOrg, OemOrg.id == Battery.oem_id)
        .outerjoin(Slot, Slot.id == Battery.slot_id)
        .outerjoin(Station, Station.id == Slot.station_id)
        .outerjoin(Vehicle, Vehicle.id == Battery.vehicle_id)
    )


_SERIAL = bindparam("serial", type_=String)
_VIEWER = bindparam("viewer_oem_id", type_=Integer)


@cache
def _battery_by_serial(for_oem: bool) -> Select[*tuple[Any, ...]]:
    """Built once (at first use: this module and vehicles' import each other), for the hot
    read GET /batteries/{serial}: building a statement and its cache key cost more CPU than
    PostgreSQL spends running it. One for OEM viewers, one for the rest."""
    if for_oem:
        return _battery_view(_VIEWER).where(Battery.serial == _SERIAL, *readable_batteries(_VIEWER))
    return _battery_view(None).where(Battery.serial == _SERIAL)


@cache
def _prepared_battery_by_serial(for_oem: bool) -> Prepared:
    return prepare(_battery_by_serial(for_oem))


def battery_view(session: Session, serial: str, *, oem_id: int | None = None) -> RowMapping | None:
    query = _battery_by_serial(oem_id is not None)
    parameters = {"serial": serial, "viewer_oem_id": oem_id}
    return session.execute(query, parameters).mappings().one_or_none()


async def read_battery_view(
    statements: Statements, serial: str, *, oem_id: int | None
) -> NamedRow | None:
    """battery_view for the async read: the same statement, run by psycopg."""
    parameters = {"serial": serial, "viewer_oem_id": oem_id}
    rows = await statements.rows(_prepared_battery_by_serial(oem_id is not None), parameters)
    return rows[0] if rows else None


def _filter_conditions(f: BatteryFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if f.state is not None:
        conditions.append(Battery.state == f.state)
    if f.pack_type_code is not None:
        conditions.append(PackType.code == f.pack_type_code)
    if f.owner_code is not None:
        conditions.append(OwnerOrg.code == f.owner_code)
    if f.oem_code is not None:
        conditions.append(OemOrg.code == f.oem_code)
    if f.station_code is not None:
        conditions.append(Station.code == f.station_code)
    if f.location_kind is not None:
        conditions.append(Battery.location_kind == f.location_kind)
    if f.min_soc_pct is not None:
        conditions.append(Battery.soc_pct >= f.min_soc_pct)
    if f.max_soh_pct is not None:
        conditions.append(Battery.soh_pct <= f.max_soh_pct)
    return conditions


def list_battery_views(
    session: Session, principal: Principal, f: BatteryFilter, *, cursor: str | None, limit: int
) -> list[RowMapping]:
    """Up to limit + 1 rows after the cursor, in serial order."""
    query = after_cursor(
        readable_statement(principal).where(*_filter_conditions(f)), Battery.serial, cursor, limit
    )
    return list(session.execute(query).mappings())


def serial_exists(session: Session, serial: str) -> bool:
    return bool(session.scalar(select(exists().where(Battery.serial == serial))))


def pack_type_id(session: Session, code: str) -> int | None:
    return session.scalar(select(PackType.id).where(PackType.code == code))


def organization_by_code(session: Session, code: str) -> Organization | None:
    return session.scalar(select(Organization).where(Organization.code == code))


def station_operator_of_slot(session: Session, slot_id: int) -> int:
    return session.execute(
        select(Station.operator_id)
        .join(Slot, Slot.station_id == Station.id)
        .where(Slot.id == slot_id)
    ).scalar_one()


def station_exists(session: Session, code: str) -> bool:
    return bool(session.scalar(select(exists().where(Station.code == code))))


@dataclass(frozen=True)
class SlotTarget:
    slot_id: int
    enabled: bool
    operator_id: int
    occupant_serial: str | None


def slot_target(session: Session, station_code: str, slot_number: int) -> SlotTarget | None:
    row = session.execute(
        select(Slot.id, Slot.enabled, Station.operator_id, Battery.serial)
        .join(Station, Station.id == Slot.station_id)
        .outerjoin(Battery, Battery.slot_id == Slot.id)
        .where(Station.code == station_code, Slot.number == slot_number)
    ).one_or_none()
    return None if row is None else SlotTarget(*row)


@dataclass(frozen=True)
class VehicleTarget:
    vehicle_id: int
    takes_pack_type: bool
    occupant_serial: str | None


def vehicle_target(session: Session, vin: str, pack_type_id: int) -> VehicleTarget | None:
    takes = (
        exists()
        .where(vehicle_model_pack_types.c.vehicle_model_id == Vehicle.model_id)
        .where(vehicle_model_pack_types.c.pack_type_id == pack_type_id)
    )
    row = session.execute(
        select(Vehicle.id, takes, Battery.serial)
        .outerjoin(Battery, Battery.vehicle_id == Vehicle.id)
        .where(Vehicle.vin == vin)
    ).one_or_none()
    return None if row is None else VehicleTarget(*row)


FromSlot = aliased(Slot, name="from_slot")
FromStation = aliased(Station, name="from_station")
FromVehicle = aliased(Vehicle, name="from_vehicle")
ToSlot = aliased(Slot, name="to_slot")
ToStation = aliased(Station, name="to_station")
ToVehicle = aliased(Vehicle, name="to_vehicle")


def custody_history(
    session: Session,
    battery_id: int,
    *,
    after: tuple[datetime, int] | None,
    limit: int,
    viewer_oem_id: int | None,
) -> list[RowMapping]:
    """Oldest first, keyed on (at, id): `at` can be a device's clock, so ids alone would not
    keep time order."""
    query = (
        select(
            CustodyEvent.id,
            CustodyEvent.at,
            CustodyEvent.cause,
            CustodyEvent.from_kind,
            FromStation.code.label("from_station_code"),
            FromSlot.number.label("from_slot_number"),
            vehicle_repo.readable_vin(FromVehicle.vin, viewer_oem_id).label("from_vin"),
            CustodyEvent.to_kind,
            ToStation.code.label("to_station_code"),
            ToSlot.number.label("to_slot_number"),
            vehicle_repo.readable_vin(ToVehicle.vin, viewer_oem_id).label("to_vin"),
            CustodyEvent.state_from,
            CustodyEvent.state_to,
            CustodyEvent.swap_id,
            CustodyEvent.note,
        )
        .outerjoin(FromSlot, FromSlot.id == CustodyEvent.from_slot_id)
        .outerjoin(FromStation, FromStation.id == FromSlot.station_id)
        .outerjoin(FromVehicle, FromVehicle.id == CustodyEvent.from_vehicle_id)
        .outerjoin(ToSlot, ToSlot.id == CustodyEvent.to_slot_id)
        .outerjoin(ToStation, ToStation.id == ToSlot.station_id)
        .outerjoin(ToVehicle, ToVehicle.id == CustodyEvent.to_vehicle_id)
        .where(CustodyEvent.battery_id == battery_id)
    )
    if after is not None:
        query = query.where(tuple_(CustodyEvent.at, CustodyEvent.id) > tuple_(*after))
    query = query.order_by(CustodyEvent.at, CustodyEvent.id).limit(limit)
    return list(session.execute(query).mappings())


def battery_id_for(session: Session, principal: Principal, serial: str) -> int | None:
    query = select(Battery.id).where(
        Battery.serial == serial, *readable_batteries(principal.oem_scope)
    )
    return session.scalar(query)
