from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.dependencies import CurrentPrincipal, WriterPrincipal
from app.core.db import SessionDep
from app.core.errors import Forbidden, NotFound, Unauthorized, problem_responses
from app.core.pagination import Cursor, InvalidCursor, Limit, Page
from app.telemetry import service
from app.telemetry.schemas import (
    BatteryTelemetryKind,
    ChargingSessionRead,
    DeadLetterRead,
    VehicleTelemetryRead,
)

router = APIRouter(tags=["telemetry"])

From = Annotated[
    datetime | None, Query(alias="from", description="Inclusive start (RFC 3339 with offset)")
]
To = Annotated[datetime | None, Query(alias="to", description="Exclusive end (RFC 3339)")]
# Shown in OpenAPI on both battery routes; the rule itself is repository.readable_records.
_BATTERY_ACCESS = (
    "Admins read every record; an OEM key the records of its own program's batteries; the "
    "battery's owner all its records. An operator reads a battery that is or has been in one "
    "of its stations' slots, and of it the records its own stations wrote, i.e. those of the "
    "times the battery was there (the ingest stores a station's record only for a battery in "
    "its slots at the record's time). After the battery has left, those records stay readable "
    "and nothing another station wrote, before or after, is. A battery never in its slots is "
    "a 404, as for one that does not exist."
)
_READ_ERRORS = problem_responses(Unauthorized, NotFound, InvalidCursor, service.InvalidTimeRange)

BatteryRecordRead = service.BatteryRecordRead


@router.get(
    "/batteries/{serial}/telemetry",
    summary="A battery's charging, health or capacity records, oldest first",
    description=_BATTERY_ACCESS,
    responses=_READ_ERRORS,
)
def battery_telemetry(
    serial: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    kind: BatteryTelemetryKind,
    from_: From = None,
    to: To = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[BatteryRecordRead]:
    return service.battery_telemetry(
        session, principal, serial=serial, kind=kind, start=from_, end=to, limit=limit,
        cursor=cursor,
    )  # fmt: skip


@router.get(
    "/batteries/{serial}/charging-sessions",
    summary="A battery's charging sessions, oldest first",
    description=_BATTERY_ACCESS,
    responses=_READ_ERRORS,
)
def battery_charging_sessions(
    serial: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    from_: From = None,
    to: To = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ChargingSessionRead]:
    return service.charging_sessions(
        session, principal, serial=serial, start=from_, end=to, limit=limit, cursor=cursor
    )


@router.get(
    "/vehicles/{vin}/telemetry",
    summary="A vehicle's telemetry, oldest first",
    responses=_READ_ERRORS,
)
def vehicle_telemetry(
    vin: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    from_: From = None,
    to: To = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[VehicleTelemetryRead]:
    return service.vehicle_telemetry(
        session, principal, vin=vin, start=from_, end=to, limit=limit, cursor=cursor
    )


@router.get(
    "/dead-letters",
    summary="Messages and records the ingest refused, oldest first (operators and admins)",
    responses=problem_responses(Unauthorized, Forbidden, InvalidCursor, service.InvalidTimeRange),
)
def list_dead_letters(
    session: SessionDep,
    principal: WriterPrincipal,
    reason: Annotated[str | None, Query(max_length=32, description="e.g. schema")] = None,
    from_: From = None,
    to: To = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[DeadLetterRead]:
    return service.dead_letters(
        session, principal, reason=reason, start=from_, end=to, limit=limit, cursor=cursor
    )
