from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.auth.dependencies import CurrentPrincipal, WriterPrincipal
from app.core.db import SessionDep
from app.core.errors import Forbidden, Unauthorized, problem_responses
from app.core.pagination import Cursor, InvalidCursor, Limit, Page
from app.models import StationStatus
from app.organizations.exceptions import OrganizationRoleMismatch, UnknownOrganization
from app.stations import service
from app.stations.exceptions import (
    OperatorCodeRequired,
    SlotNotFound,
    SlotsChanged,
    StationExists,
    StationNotFound,
    TooManySlots,
)
from app.stations.schemas import (
    MAX_SLOT_NUMBER,
    SlotRead,
    SlotsAdd,
    SlotUpdate,
    StationCreate,
    StationRead,
    StationUpdate,
)

router = APIRouter(prefix="/stations", tags=["stations"])

SlotNumber = Annotated[int, Path(ge=1, le=MAX_SLOT_NUMBER, description="Slot number, from 1")]


@router.post(
    "",
    status_code=201,
    summary="Create a station with its slots (admin, or an operator for itself)",
    responses=problem_responses(
        Unauthorized,
        Forbidden,
        StationExists,
        OperatorCodeRequired,
        UnknownOrganization,
        OrganizationRoleMismatch,
    ),
)
def create_station(
    body: StationCreate, session: SessionDep, principal: WriterPrincipal
) -> StationRead:
    return service.create_station(session, principal, body)


@router.get(
    "",
    summary="List stations (operator keys: their own)",
    responses=problem_responses(Unauthorized, InvalidCursor),
)
def list_stations(
    session: SessionDep,
    principal: CurrentPrincipal,
    operator_code: Annotated[str | None, Query(description="Only this operator's stations")] = None,
    status: Annotated[
        StationStatus | None, Query(description="Only stations in this status")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[StationRead]:
    return service.list_stations(
        session, principal, operator_code=operator_code, status=status, cursor=cursor, limit=limit
    )


@router.get(
    "/{code}",
    summary="Read a station (operator keys: their own)",
    responses=problem_responses(Unauthorized, StationNotFound),
)
def read_station(code: str, session: SessionDep, principal: CurrentPrincipal) -> StationRead:
    return service.read_station(session, principal, code)


@router.patch(
    "/{code}",
    summary="Change a station's name, status, target charge, location or time zone",
    responses=problem_responses(Unauthorized, Forbidden, StationNotFound),
)
def update_station(
    code: str, body: StationUpdate, session: SessionDep, principal: WriterPrincipal
) -> StationRead:
    return service.update_station(session, principal, code, body)


@router.get(
    "/{code}/slots",
    summary="List a station's slots and the battery in each",
    description=(
        "OEM keys may read every station's slots, to route their vehicles, but see"
        " `battery_serial` and `soh_pct` only for their own batteries."
    ),
    responses=problem_responses(Unauthorized, StationNotFound, InvalidCursor),
)
def list_slots(
    code: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[SlotRead]:
    return service.list_slots(session, principal, code, cursor=cursor, limit=limit)


@router.post(
    "/{code}/slots",
    status_code=201,
    summary="Add slots after the station's last slot",
    responses=problem_responses(
        Unauthorized, Forbidden, StationNotFound, TooManySlots, SlotsChanged
    ),
)
def add_slots(
    code: str, body: SlotsAdd, session: SessionDep, principal: WriterPrincipal
) -> list[SlotRead]:
    return service.add_slots(session, principal, code, body.count)


@router.patch(
    "/{code}/slots/{number}",
    summary="Enable or disable a slot",
    responses=problem_responses(Unauthorized, Forbidden, StationNotFound, SlotNotFound),
)
def update_slot(
    code: str,
    number: SlotNumber,
    body: SlotUpdate,
    session: SessionDep,
    principal: WriterPrincipal,
) -> SlotRead:
    return service.update_slot(session, principal, code, number, enabled=body.enabled)
