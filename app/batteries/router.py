from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from app.auth.dependencies import AsyncPrincipal, CurrentPrincipal, WriterPrincipal
from app.batteries import service
from app.batteries.exceptions import (
    PLACEMENT_ERRORS,
    AdminOnlyField,
    BatteryInUse,
    BatteryNotFound,
    BatteryOutOfScope,
    BatteryQuarantined,
    BatteryRetired,
    BatterySerialTaken,
    InvalidStateTransition,
    OrganizationRoleMismatch,
    UnknownReference,
)
from app.batteries.schemas import (
    BatteryCreate,
    BatteryFilter,
    BatteryRead,
    BatteryUpdate,
    CustodyEventRead,
    Place,
    QuarantineRequest,
    StateChangeRequest,
)
from app.core.db import ReadDep, SessionDep
from app.core.errors import Forbidden, Unauthorized, problem_responses
from app.core.pagination import Cursor, InvalidCursor, Limit, Page
from app.models import BatteryState, CustodyCause, LocationKind

router = APIRouter(prefix="/batteries", tags=["batteries"])

READ_ERRORS = (Unauthorized, BatteryNotFound)
WRITE_ERRORS = (Unauthorized, Forbidden, BatteryNotFound, BatteryOutOfScope)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register a battery at its first location",
    responses=problem_responses(
        Unauthorized, Forbidden, BatterySerialTaken, OrganizationRoleMismatch, *PLACEMENT_ERRORS
    ),
)
def register_battery(
    session: SessionDep, principal: WriterPrincipal, body: BatteryCreate
) -> BatteryRead:
    """Operators may place a new battery in a slot of their own stations, a warehouse or
    in transit; only admins may register one directly into a vehicle."""
    return service.register_battery(session, principal, body)


@router.get(
    "",
    summary="List batteries, ordered by serial",
    responses=problem_responses(Unauthorized, InvalidCursor),
)
def list_batteries(
    session: SessionDep,
    principal: CurrentPrincipal,
    state: BatteryState | None = None,
    pack_type_code: str | None = None,
    owner_code: str | None = None,
    oem_code: str | None = None,
    station_code: str | None = None,
    location_kind: LocationKind | None = None,
    min_soc_pct: Annotated[float | None, Query(ge=0, le=100)] = None,
    max_soh_pct: Annotated[float | None, Query(ge=0, le=100)] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[BatteryRead]:
    """OEM keys see only the batteries of their own program."""
    filters = BatteryFilter(
        state=state,
        pack_type_code=pack_type_code,
        owner_code=owner_code,
        oem_code=oem_code,
        station_code=station_code,
        location_kind=location_kind,
        min_soc_pct=min_soc_pct,
        max_soh_pct=max_soh_pct,
    )
    return service.list_batteries(session, principal, filters, cursor=cursor, limit=limit)


@router.get("/{serial}", summary="One battery", responses=problem_responses(*READ_ERRORS))
async def get_battery(statements: ReadDep, principal: AsyncPrincipal, serial: str) -> BatteryRead:
    return await service.read_battery(statements, principal, serial)


@router.patch(
    "/{serial}",
    summary="Change a battery's owner, OEM program or manufacturing date",
    responses=problem_responses(
        *WRITE_ERRORS, AdminOnlyField, UnknownReference, OrganizationRoleMismatch
    ),
)
def update_battery(
    session: SessionDep, principal: WriterPrincipal, serial: str, body: BatteryUpdate
) -> BatteryRead:
    """Location and state are not fields here: use /move, /quarantine, /release, /retire.
    Only admins may change owner_code and oem_code."""
    return service.update_battery(session, principal, serial, body)


@router.post(
    "/{serial}/move",
    summary="Move a battery by hand (cause manual_move)",
    responses=problem_responses(
        *WRITE_ERRORS, BatteryRetired, BatteryQuarantined, *PLACEMENT_ERRORS
    ),
)
def move_battery(
    session: SessionDep,
    principal: WriterPrincipal,
    serial: str,
    body: Annotated[Place, Body()],
) -> BatteryRead:
    """The body is the destination, `kind` slot | vehicle | warehouse | in_transit, with an
    optional `note`. Retired batteries go only to warehouse or in_transit; quarantined ones
    never into a vehicle. Operators move only batteries at their own stations' slots or
    outside any station, and only into their own slots, a warehouse or in transit."""
    return service.move_battery(session, principal, serial, body)


@router.post(
    "/{serial}/quarantine",
    summary="Take an in-service battery out of use",
    responses=problem_responses(*WRITE_ERRORS, InvalidStateTransition),
)
def quarantine_battery(
    session: SessionDep, principal: WriterPrincipal, serial: str, body: QuarantineRequest
) -> BatteryRead:
    return service.change_battery_state(
        session, principal, serial, cause=CustodyCause.quarantine, note=body.reason
    )


@router.post(
    "/{serial}/release",
    summary="Return a quarantined battery to service",
    responses=problem_responses(*WRITE_ERRORS, InvalidStateTransition),
)
def release_battery(
    session: SessionDep,
    principal: WriterPrincipal,
    serial: str,
    body: StateChangeRequest | None = None,
) -> BatteryRead:
    return service.change_battery_state(
        session, principal, serial, cause=CustodyCause.release, note=body.note if body else None
    )


@router.post(
    "/{serial}/retire",
    summary="Retire a battery for good",
    responses=problem_responses(*WRITE_ERRORS, InvalidStateTransition, BatteryInUse),
)
def retire_battery(
    session: SessionDep,
    principal: WriterPrincipal,
    serial: str,
    body: StateChangeRequest | None = None,
) -> BatteryRead:
    """The battery must already be in a warehouse or in transit (409 BatteryInUse otherwise):
    taking it out of a slot or vehicle is an explicit /move first, so retiring never empties a
    vehicle as a side effect."""
    return service.change_battery_state(
        session, principal, serial, cause=CustodyCause.retire, note=body.note if body else None
    )


@router.get(
    "/{serial}/history",
    summary="Custody events of a battery, oldest first",
    responses=problem_responses(*READ_ERRORS, InvalidCursor),
)
def battery_history(
    session: SessionDep,
    principal: CurrentPrincipal,
    serial: str,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[CustodyEventRead]:
    return service.battery_history(session, principal, serial, cursor=cursor, limit=limit)
