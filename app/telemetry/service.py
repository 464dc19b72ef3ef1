"""Read-back of stored telemetry, scoped to what the caller's key may see
(repository.may_read_battery, readable_records, may_read_vehicle, readable_dead_letters)."""

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.core.errors import AppError, NotFound
from app.core.keyset import AnyRow
from app.core.pagination import CursorInt, CursorTime, Page, decode_cursor, page_of
from app.models import (
    Battery,
    CapacityRecord,
    ChargingSample,
    DeadLetter,
    HealthRecord,
    Vehicle,
)
from app.telemetry import repository
from app.telemetry.schemas import (
    BatteryTelemetryKind,
    CapacityRecordRead,
    ChargingSampleRead,
    ChargingSessionRead,
    DeadLetterRead,
    HealthRecordRead,
    VehicleTelemetryRead,
)


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
    battery = repository.battery_by_serial(session, serial)
    # Out of scope looks exactly like absent, so that serials do not leak across companies.
    if battery is None or not repository.may_read_battery(session, principal, battery):
        raise NotFound(f"battery {serial!r} not found")
    return battery


def visible_vehicle(session: Session, principal: Principal, vin: str) -> Vehicle:
    vehicle = repository.vehicle_by_vin(session, vin)
    if vehicle is None or not repository.may_read_vehicle(principal, vehicle):
        raise NotFound(f"vehicle {vin!r} not found")
    return vehicle


_TIME_CURSOR = TypeAdapter(tuple[CursorTime])
_ID_CURSOR = TypeAdapter(tuple[CursorInt])


def _cursor_time(cursor: str | None) -> datetime | None:
    values = decode_cursor(cursor, _TIME_CURSOR)
    return None if values is None else values[0]


def _time_key(time_attribute: str) -> Callable[[AnyRow], tuple[object, ...]]:
    """The cursor of a time-ordered page: the time of its last record, as _cursor_time reads it."""
    return lambda row: (getattr(row[0], time_attribute).isoformat(),)


BatteryRecordRead = ChargingSampleRead | HealthRecordRead | CapacityRecordRead
_BATTERY_KINDS: dict[BatteryTelemetryKind, tuple[Any, type[BatteryRecordRead]]] = {
    BatteryTelemetryKind.charging: (ChargingSample, ChargingSampleRead),
    BatteryTelemetryKind.health: (HealthRecord, HealthRecordRead),
    BatteryTelemetryKind.capacity: (CapacityRecord, CapacityRecordRead),
}


def _columns(record: Any) -> dict[str, Any]:
    return {c.key: getattr(record, c.key) for c in record.__table__.columns}


def _with_station(row: AnyRow) -> dict[str, Any]:
    record, station_code = row
    return {**_columns(record), "station_code": station_code}


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
) -> Page[BatteryRecordRead]:
    check_range(start, end)
    battery = visible_battery(session, principal, serial)
    model, read = _BATTERY_KINDS[kind]
    after = _cursor_time(cursor)
    rows = repository.station_records(
        session, principal, battery, model, start=start, end=end, after=after, limit=limit
    )
    return page_of(
        rows,
        limit,
        read=lambda row: read.model_validate(_with_station(row)),
        key=_time_key("ts"),
    )


def _vehicle_record_read(row: AnyRow) -> VehicleTelemetryRead:
    record, readable_serial = row
    return VehicleTelemetryRead.model_validate(
        {**_columns(record), "battery_serial": readable_serial}
    )


def vehicle_telemetry(
    session: Session,
    principal: Principal,
    *,
    vin: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page[VehicleTelemetryRead]:
    check_range(start, end)
    visible_vehicle(session, principal, vin)
    after = _cursor_time(cursor)
    rows = repository.vehicle_records(
        session, principal, vin, start=start, end=end, after=after, limit=limit
    )
    return page_of(rows, limit, read=_vehicle_record_read, key=_time_key("ts"))


def _charging_session_read(row: AnyRow) -> ChargingSessionRead:
    values = _with_station(row)
    values["energy_kwh"] = row[0].energy_kwh
    return ChargingSessionRead.model_validate(values)


def charging_sessions(
    session: Session,
    principal: Principal,
    *,
    serial: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page[ChargingSessionRead]:
    check_range(start, end)
    battery = visible_battery(session, principal, serial)
    after = _cursor_time(cursor)
    rows = repository.charging_sessions(
        session, principal, battery, start=start, end=end, after=after, limit=limit
    )
    return page_of(rows, limit, read=_charging_session_read, key=_time_key("started_at"))


def _dead_letter_read(d: DeadLetter) -> DeadLetterRead:
    return DeadLetterRead(
        id=d.id, received_at=d.received_at, topic=d.topic, reason=d.reason,
        detail=d.detail, record_index=d.record_index, station_code=d.station_code,
        vin=d.vin, payload_bytes=d.payload_bytes,
        payload=bytes(d.payload).decode("utf-8", errors="replace"),
    )  # fmt: skip


def dead_letters(
    session: Session,
    principal: Principal,
    *,
    reason: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page[DeadLetterRead]:
    check_range(start, end)
    values = decode_cursor(cursor, _ID_CURSOR)
    rows = repository.dead_letters(
        session,
        principal,
        reason=reason,
        start=start,
        end=end,
        after_id=None if values is None else values[0],
        limit=limit,
    )
    return page_of(rows, limit, read=_dead_letter_read, key=lambda d: (d.id,))
