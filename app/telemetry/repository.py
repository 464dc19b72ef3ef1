"""Which stored records a key may read (one rule for battery telemetry and charging sessions,
one for vehicles, one for dead letters), and the queries of the telemetry read-back."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Exists, Select, exists, select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.batteries import repository as battery_repo
from app.core.keyset import AnyRow, AnySelect
from app.models import (
    Battery,
    ChargingSession,
    CustodyEvent,
    DeadLetter,
    Slot,
    Station,
    Vehicle,
    VehicleTelemetry,
)


def _own_station_ids(operator_id: int | None) -> Select[int]:
    return select(Station.id).where(Station.operator_id == operator_id)


def _was_in_own_slots(battery_id: int, operator_id: int | None) -> Exists:
    return exists().where(
        CustodyEvent.battery_id == battery_id,
        CustodyEvent.to_slot_id == Slot.id,
        Slot.station_id.in_(_own_station_ids(operator_id)),
    )


def may_read_battery(session: Session, principal: Principal, battery: Battery) -> bool:
    """Admins read every battery; an OEM its own program's; an operator the batteries it owns
    and every battery that has been in one of its stations' slots."""
    if principal.is_admin:
        return True
    if principal.oem_scope is not None:
        return battery.oem_id == principal.oem_scope
    if battery.owner_id == principal.organization_id:
        return True
    return bool(session.scalar(_was_in_own_slots(battery.id, principal.organization_id).select()))


def readable_records(
    statement: AnySelect, station_id: Any, principal: Principal, battery: Battery
) -> AnySelect:
    """Narrow a query of one battery's station records to those the key may read.

    An operator that does not own the battery reads the records its own stations wrote, that
    is what the battery did while it was in their slots (the ingest stores a station's record
    only for a battery in its slots at the record's time). After the battery has left, the
    operator still reads those records and nothing written elsewhere: not what another
    operator's station measured, before or after. Owners, OEMs and admins read every record
    of a battery they may read.
    """
    operator_id = principal.operator_scope
    if operator_id is None or battery.owner_id == operator_id:
        return statement
    return statement.where(station_id.in_(_own_station_ids(operator_id)))


def may_read_vehicle(principal: Principal, vehicle: Vehicle) -> bool:
    """A vehicle's telemetry is its OEM's and the admins'."""
    return principal.is_admin or (
        principal.oem_scope is not None and vehicle.oem_id == principal.oem_scope
    )


def readable_dead_letters(principal: Principal) -> Select[DeadLetter]:
    """Operators see what their own stations sent; vehicle and unattributable dead letters
    are for admins (the route refuses OEM keys)."""
    statement = select(DeadLetter)
    if not principal.is_admin:
        own_codes = select(Station.code).where(Station.operator_id == principal.organization_id)
        statement = statement.where(DeadLetter.station_code.in_(own_codes))
    return statement


def battery_by_serial(session: Session, serial: str) -> Battery | None:
    return session.scalar(select(Battery).where(Battery.serial == serial))


def vehicle_by_vin(session: Session, vin: str) -> Vehicle | None:
    return session.scalar(select(Vehicle).where(Vehicle.vin == vin))


def _in_range(query: Any, column: Any, start: datetime | None, end: datetime | None) -> Any:
    if start is not None:
        query = query.where(column >= start)
    if end is not None:
        query = query.where(column < end)
    return query


def _time_page(
    session: Session, query: Any, time_column: Any, after: datetime | None, limit: int
) -> Sequence[AnyRow]:
    """Up to limit + 1 rows after `after`, in time order."""
    if after is not None:
        query = query.where(time_column > after)
    return session.execute(query.order_by(time_column).limit(limit + 1)).all()


def station_records(
    session: Session,
    principal: Principal,
    battery: Battery,
    model: Any,
    *,
    start: datetime | None,
    end: datetime | None,
    after: datetime | None,
    limit: int,
) -> Sequence[AnyRow]:
    """A battery's records of one kind (charging samples, health, capacity) the key may read,
    each with the code of the station that wrote it."""
    query = (
        select(model, Station.code)
        .outerjoin(Station, Station.id == model.station_id)
        .where(model.battery_serial == battery.serial)
    )
    query = readable_records(query, model.station_id, principal, battery)
    return _time_page(session, _in_range(query, model.ts, start, end), model.ts, after, limit)


def vehicle_records(
    session: Session,
    principal: Principal,
    vin: str,
    *,
    start: datetime | None,
    end: datetime | None,
    after: datetime | None,
    limit: int,
) -> Sequence[AnyRow]:
    """A vehicle's records, each with the serial of its battery as the key may read it."""
    serial = battery_repo.readable_serial(VehicleTelemetry.battery_serial, principal.oem_scope)
    query = _in_range(
        select(VehicleTelemetry, serial).where(VehicleTelemetry.vin == vin),
        VehicleTelemetry.ts,
        start,
        end,
    )
    return _time_page(session, query, VehicleTelemetry.ts, after, limit)


def charging_sessions(
    session: Session,
    principal: Principal,
    battery: Battery,
    *,
    start: datetime | None,
    end: datetime | None,
    after: datetime | None,
    limit: int,
) -> Sequence[AnyRow]:
    query = (
        select(ChargingSession, Station.code)
        .outerjoin(Station, Station.id == ChargingSession.station_id)
        .where(ChargingSession.battery_serial == battery.serial)
    )
    query = readable_records(query, ChargingSession.station_id, principal, battery)
    query = _in_range(query, ChargingSession.started_at, start, end)
    return _time_page(session, query, ChargingSession.started_at, after, limit)


def dead_letters(
    session: Session,
    principal: Principal,
    *,
    reason: str | None,
    start: datetime | None,
    end: datetime | None,
    after_id: int | None,
    limit: int,
) -> Sequence[DeadLetter]:
    query = readable_dead_letters(principal)
    if reason is not None:
        query = query.where(DeadLetter.reason == reason)
    query = _in_range(query, DeadLetter.received_at, start, end)
    if after_id is not None:
        query = query.where(DeadLetter.id > after_id)
    return session.scalars(query.order_by(DeadLetter.id).limit(limit + 1)).all()
