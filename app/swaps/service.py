"""Swap rules and the custody change of a completed swap.

A swap moves two batteries at once: the depleted one out of the vehicle into the slot the
charged one leaves, and the charged one into the vehicle. Rejected attempts are recorded
too, so operators and OEMs can see them.

The rules of recording a swap run in the database, in one round trip: the PL/pgSQL function
swapfleet_record_swap (migration a6d2f8c4e1b9) locks, checks, moves and records; this module
builds its statement and turns the row it returns into the answer or an error.
"""

import uuid
from collections.abc import Callable

from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.config import get_settings
from app.db import Statements
from app.errors import Forbidden
from app.models import KeyRole, Station, SwapEvent, Vehicle
from app.models.base import utcnow
from app.swaps import repository
from app.swaps.exceptions import StationNotFound, SwapNotFound
from app.swaps.schemas import SwapCreate, SwapRead

SWAP_WRITERS = (KeyRole.admin, KeyRole.operator)


async def record_swap(
    statements: Statements, principal: Principal, request: SwapCreate
) -> SwapRead:
    """Records a completed swap, or a rejected one with its reason code; never raises for a
    rule violation, so that the rejection is committed with the request. Only admin and
    operator keys record swaps, and they read every serial (to_read hides other programs'
    serials from OEM keys only)."""
    return await _record(
        statements,
        request,
        api_key_id=principal.api_key_id,
        may_write=principal.role in SWAP_WRITERS,
        operator_id=None if principal.is_admin else principal.organization_id,
        require_writer=lambda: principal.require_role(*SWAP_WRITERS),
    )


async def record_station_swap(
    statements: Statements, request: SwapCreate, *, operator_id: int
) -> SwapRead:
    """A swap a station reported itself (the OCPP gateway, app/ocpp): the same rules and
    records as record_swap, on behalf of the station's operator, with no API key."""
    return await _record(
        statements,
        request,
        api_key_id=None,
        may_write=True,
        operator_id=operator_id,
        require_writer=lambda: None,
    )


async def _record(
    statements: Statements,
    request: SwapCreate,
    *,
    api_key_id: int | None,
    may_write: bool,
    operator_id: int | None,
    require_writer: Callable[[], None],
) -> SwapRead:
    row = await repository.record_swap(
        statements,
        {
            "station_code": request.station_code,
            "vin": request.vin,
            "removed_serial": request.removed_battery_serial,
            "removed_soc_pct": request.removed_soc_pct,
            "removed_soh_pct": request.removed_soh_pct,
            "installed_serial": request.installed_battery_serial,
            "installed_soc_pct": request.installed_soc_pct,
            "installed_soh_pct": request.installed_soh_pct,
            "started_at": request.started_at,
            "finished_at": request.finished_at,
            "now": utcnow(),
            "min_soh_pct": get_settings().swap_min_soh_pct,
            "api_key_id": api_key_id,
            "may_write": may_write,
            "operator_id": operator_id,
        },
    )
    # The function refused before writing anything: an unknown station, a key that may not
    # record swaps, another operator's station.
    if row["status"] == "station_not_found":
        raise StationNotFound(f"station {request.station_code!r} not found")
    if row["status"] == "other_operator":
        raise Forbidden(f"station {request.station_code!r} is run by another operator")
    if row["status"] != "recorded":
        require_writer()  # 'role_forbidden': raises in today's words
        raise AssertionError(f"swapfleet_record_swap returned status {row['status']!r}")
    # The function returns SwapRead's fields by name.
    fields = {name: row[name] for name in SwapRead.model_fields}
    # The times as the client sent them (with its offset); the clock's where it sent none.
    fields["started_at"] = request.started_at or row["started_at"]
    fields["finished_at"] = request.finished_at or row["finished_at"]
    return SwapRead(**fields)


def to_read(row: repository.SwapRow) -> SwapRead:
    """The serials as the viewer may read them; a battery's readings go with its serial,
    hidden together when the viewer may not read it."""
    swap: SwapEvent = row[0]
    removed = row.removed_serial_readable == swap.removed_battery_serial
    installed = row.installed_serial_readable == swap.installed_battery_serial
    return SwapRead(
        id=swap.id,
        station_code=row.station_code,
        vin=swap.vin,
        outcome=swap.outcome,
        reason_code=swap.reason_code,
        detail=swap.detail,
        removed_battery_serial=row.removed_serial_readable,
        removed_soc_pct=swap.removed_soc_pct if removed else None,
        removed_soh_pct=swap.removed_soh_pct if removed else None,
        removed_to_slot_number=row.removed_to_slot_number,
        installed_battery_serial=row.installed_serial_readable,
        installed_soc_pct=swap.installed_soc_pct if installed else None,
        installed_soh_pct=swap.installed_soh_pct if installed else None,
        installed_from_slot_number=row.installed_from_slot_number,
        started_at=swap.started_at,
        finished_at=swap.finished_at,
        created_at=swap.created_at,
    )


def read_swap(session: Session, principal: Principal, swap_id: uuid.UUID) -> SwapRead:
    viewer_oem_id = principal.organization_id if principal.role is KeyRole.oem else None
    row = repository.get_swap_row(session, swap_id, viewer_oem_id=viewer_oem_id)
    if row is None or not _visible(session, principal, row):
        raise SwapNotFound(f"swap {swap_id} not found")
    return to_read(row)


def _visible(session: Session, principal: Principal, row: repository.SwapRow) -> bool:
    if principal.is_admin:
        return True
    swap: SwapEvent = row[0]
    if principal.role is KeyRole.operator:
        station = session.get(Station, swap.station_id)
        return station is not None and station.operator_id == principal.organization_id
    if swap.vehicle_id is None:
        return False
    vehicle = session.get(Vehicle, swap.vehicle_id)
    return vehicle is not None and vehicle.oem_id == principal.organization_id
