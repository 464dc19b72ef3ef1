"""Read-back of stored telemetry, scoped to what the caller's key may see."""

from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.batteries import repository as battery_repo
from app.core.errors import AppError, NotFound
from app.core.pagination import CursorInt, CursorTime, decode_cursor, encode_cursor
from app.models import (
    Battery,
    CapacityRecord,
    ChargingSample,
    ChargingSession,
    DeadLetter,
    HealthRecord,
    KeyRole,
    Station,
    Vehicle,
    VehicleTelemetry,
)
from app.telemetry import repository
from app.telemetry.schemas import BatteryTelemetryKind


class InvalidTimeRange(AppError):
    status = 422
    code = "InvalidTimeRange"
    title = "Invalid time range"


def check_range(start: datetime | None, end: datetime | None) -> None:
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.utcoffset() is None:
            raise InvalidTimeRange(f"`{name}` needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
    if start is not None and end is not None and start >= end:
        raise InvalidTimeRange("`from` must be before `to`")


def visible_battery(session: Session, principal: Principal, serial: str) -> Battery:
    battery = session.scalar(select(Battery).where(Battery.serial == serial))
    # Out of scope looks exactly like absent, so that serials do not leak across companies.
    if battery is None or not repository.may_read_battery(session, principal, battery):
        raise NotFound(f"battery {serial!r} not found")
    return battery


def visible_vehicle(session: Session, principal: Principal, vin: str) -> Vehicle:
    vehicle = session.scalar(select(Vehicle).where(Vehicle.vin == vin))
    if vehicle is None or not (
        principal.is_admin
        or (principal.role is KeyRole.oem and vehicle.oem_id == principal.organization_id)
    ):
        raise NotFound(f"vehicle {vin!r} not found")
    return vehicle


_TIME_CURSOR = TypeAdapter(tuple[CursorTime])
_ID_CURSOR = TypeAdapter(tuple[CursorInt])


def _cursor_time(cursor: str | None) -> datetime | None:
    values = decode_cursor(cursor, _TIME_CURSOR)
    return None if values is None else values[0]


def _page(
    session: Session, query: Any, time_column: Any, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    after = _cursor_time(cursor)
    if after is not None:
        query = query.where(time_column > after)
    rows = list(session.execute(query.order_by(time_column).limit(limit + 1)).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(getattr(rows[-1][0], time_column.key).isoformat())
    return rows, next_cursor


def _in_range(query: Any, column: Any, start: datetime | None, end: datetime | None) -> Any:
    if start is not None:
        query = query.where(column >= start)
    if end is not None:
        query = query.where(column < end)
    return query


_BATTERY_MODELS: dict[BatteryTelemetryKind, Any] = {
    BatteryTelemetryKind.charging: ChargingSample,
    BatteryTelemetryKind.health: HealthRecord,
    BatteryTelemetryKind.capacity: CapacityRecord,
}


def battery_telemetry(
    session: Session,
    principal: Principal,
    *,
    serial: str,
    kind: BatteryTelemetryKind,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    check_range(start, end)
    battery = visible_battery(session, principal, serial)
    model = _BATTERY_MODELS[kind]
    query = (
        select(model, Station.code)
        .outerjoin(Station, Station.id == model.station_id)
        .where(model.battery_serial == serial)
    )
    query = repository.readable_records(query, model.station_id, principal, battery)
    rows, next_cursor = _page(
        session, _in_range(query, model.ts, start, end), model.ts, limit, cursor
    )
    return [_with_station(record, code) for record, code in rows], next_cursor


def _with_station(record: Any, station_code: str | None) -> dict[str, Any]:
    values = {c.key: getattr(record, c.key) for c in record.__table__.columns}
    values["station_code"] = station_code
    return values


def vehicle_telemetry(
    session: Session,
    principal: Principal,
    *,
    vin: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    check_range(start, end)
    visible_vehicle(session, principal, vin)
    viewer_oem_id = principal.organization_id if principal.role is KeyRole.oem else None
    serial = battery_repo.readable_serial(VehicleTelemetry.battery_serial, viewer_oem_id)
    query = _in_range(
        select(VehicleTelemetry, serial).where(VehicleTelemetry.vin == vin),
        VehicleTelemetry.ts,
        start,
        end,
    )
    rows, next_cursor = _page(session, query, VehicleTelemetry.ts, limit, cursor)
    items = []
    for record, readable in rows:
        values = {c.key: getattr(record, c.key) for c in record.__table__.columns}
        values["battery_serial"] = readable
        items.append(values)
    return items, next_cursor


def charging_sessions(
    session: Session,
    principal: Principal,
    *,
    serial: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    check_range(start, end)
    battery = visible_battery(session, principal, serial)
    query = (
        select(ChargingSession, Station.code)
        .outerjoin(Station, Station.id == ChargingSession.station_id)
        .where(ChargingSession.battery_serial == serial)
    )
    query = repository.readable_records(query, ChargingSession.station_id, principal, battery)
    query = _in_range(query, ChargingSession.started_at, start, end)
    rows, next_cursor = _page(session, query, ChargingSession.started_at, limit, cursor)
    items = []
    for record, code in rows:
        values = _with_station(record, code)
        values["energy_kwh"] = record.energy_kwh
        items.append(values)
    return items, next_cursor


def dead_letters(
    session: Session,
    principal: Principal,
    *,
    reason: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[DeadLetter], str | None]:
    check_range(start, end)
    query = select(DeadLetter)
    if not principal.is_admin:
        # Operators see what their own stations sent; vehicle and unattributable dead
        # letters are for admins.
        own_codes = select(Station.code).where(Station.operator_id == principal.organization_id)
        query = query.where(DeadLetter.station_code.in_(own_codes))
    if reason is not None:
        query = query.where(DeadLetter.reason == reason)
    query = _in_range(query, DeadLetter.received_at, start, end)
    values = decode_cursor(cursor, _ID_CURSOR)
    if values is not None:
        query = query.where(DeadLetter.id > values[0])
    rows = list(session.scalars(query.order_by(DeadLetter.id).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor
