"""REST around the OCPP gateway: the idToken -> vehicle mapping it authorizes with, and the
custody exceptions it flags (docs/ocpp.md)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.dependencies import WriterPrincipal
from app.auth.service import Principal
from app.core.db import SessionDep
from app.core.errors import Forbidden, NotFound, Unauthorized, Unprocessable, problem_responses
from app.core.pagination import Cursor, CursorInt, Limit, Page, decode_cursor, encode_cursor
from app.models import CustodyException, KeyRole, OcppSwapRequest, Station
from app.ocpp import service
from app.ocpp.schemas import (
    CustodyExceptionRead,
    IdTokenPut,
    IdTokenRead,
    OcppPasswordRead,
    SwapRequestCreate,
    SwapRequestRead,
)
from app.stations import repository as stations_repository
from app.stations.exceptions import StationNotFound

router = APIRouter(tags=["ocpp"])

IdTokenPath = Annotated[str, Path(min_length=1, max_length=255, description="OCPP idToken")]


class VehicleNotFound(NotFound):
    code = "VehicleNotFound"
    title = "Vehicle not found"


@router.put(
    "/id-tokens/{id_token}",
    response_model=IdTokenRead,
    summary="Map an OCPP idToken (RFID tag, app token) to the vehicle it identifies",
    responses=problem_responses(Unauthorized, Forbidden, VehicleNotFound),
)
def put_id_token(
    id_token: IdTokenPath, body: IdTokenPut, session: SessionDep, principal: WriterPrincipal
) -> IdTokenRead:
    try:
        service.register_id_token(session, id_token, body.vin)
    except LookupError as exc:
        raise VehicleNotFound(str(exc)) from exc
    return IdTokenRead(id_token=id_token.lower(), vin=body.vin)


@router.get(
    "/custody-exceptions",
    response_model=Page[CustodyExceptionRead],
    summary="Physical swaps the rules refused and places the records and stations disagree on",
    description="Newest first. Operators see their own stations'; admins every one.",
    responses=problem_responses(Unauthorized, Forbidden),
)
def list_custody_exceptions(
    session: SessionDep,
    principal: WriterPrincipal,
    station_code: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[CustodyExceptionRead]:
    query = select(CustodyException, Station.code).join(
        Station, Station.id == CustodyException.station_id
    )
    if principal.role is KeyRole.operator:
        query = query.where(Station.operator_id == principal.organization_id)
    if station_code is not None:
        query = query.where(Station.code == station_code)
    after = decode_cursor(cursor, _CURSOR)
    if after is not None:
        query = query.where(CustodyException.id < after[0])
    rows = session.execute(query.order_by(CustodyException.id.desc()).limit(limit + 1)).all()
    items = [
        CustodyExceptionRead(
            id=e.id,
            station_code=code,
            at=e.at,
            reason_code=e.reason_code,
            detail=e.detail,
            swap_id=e.swap_id,
            request_id=e.request_id,
            battery_serial=e.battery_serial,
        )
        for e, code in rows[:limit]
    ]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return Page[CustodyExceptionRead](items=items, next_cursor=next_cursor)


_CURSOR = TypeAdapter(tuple[CursorInt])


class VehicleWithoutIdToken(Unprocessable):
    code = "VehicleHasNoIdToken"
    title = "The vehicle has no OCPP idToken"


class SwapRequestNotFound(NotFound):
    code = "SwapRequestNotFound"
    title = "Swap request not found"


def _station(session: Session, principal: Principal, code: str) -> Station:
    station = stations_repository.get_station(session, code)
    if station is None or (
        principal.role is KeyRole.operator and station.operator_id != principal.organization_id
    ):
        raise StationNotFound(f"station {code!r} not found")
    return station


def _request_read(session: Session, station: Station, request: OcppSwapRequest) -> SwapRequestRead:
    return SwapRequestRead(
        request_id=request.request_id,
        station_code=station.code,
        vin=request.vin,
        state=request.state,
        status_info=request.status_info,
        swap_id=service.swap_of_request(session, station.id, request.request_id),
        created_at=request.created_at,
        answered_at=request.answered_at,
    )


@router.post(
    "/stations/{code}/swap-requests",
    status_code=202,
    response_model=SwapRequestRead,
    summary="Ask a station over OCPP to start a battery swap for a vehicle (RequestBatterySwap)",
    description="Answered at once with the request in state `pending`; the gateway that holds "
    "the station's connection sends it, on whichever API instance that is, and stores the "
    "station's answer. Read it back with GET .../swap-requests/{request_id}.",
    responses=problem_responses(
        Unauthorized, Forbidden, StationNotFound, VehicleNotFound, VehicleWithoutIdToken
    ),
)
def create_swap_request(
    code: str, body: SwapRequestCreate, session: SessionDep, principal: WriterPrincipal
) -> SwapRequestRead:
    station = _station(session, principal, code)
    try:
        request = service.create_swap_request(session, station.id, body.vin)
    except service.VehicleHasNoIdToken as exc:
        raise VehicleWithoutIdToken(str(exc)) from exc
    except LookupError as exc:
        raise VehicleNotFound(str(exc)) from exc
    session.refresh(request)
    return _request_read(session, station, request)


@router.post(
    "/stations/{code}/ocpp-password",
    status_code=201,
    response_model=OcppPasswordRead,
    summary="Create (or replace) the station's OCPP password; shown once, stored hashed",
    description="What `swapfleet devices provision --station CODE --ocpp` does, for tools "
    "that provision stations over REST (the fleet simulator). The station connects with it "
    "as `SecurityCtrlr.BasicAuthPassword`; an earlier password stops working.",
    responses=problem_responses(Unauthorized, Forbidden, StationNotFound),
)
def create_ocpp_password(
    code: str, session: SessionDep, principal: WriterPrincipal
) -> OcppPasswordRead:
    station = _station(session, principal, code)
    return OcppPasswordRead(station_code=station.code, password=service.set_password(session, code))


@router.get(
    "/stations/{code}/swap-requests/{request_id}",
    response_model=SwapRequestRead,
    summary="A swap request and the station's answer",
    responses=problem_responses(Unauthorized, Forbidden, StationNotFound, SwapRequestNotFound),
)
def read_swap_request(
    code: str,
    request_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    principal: WriterPrincipal,
) -> SwapRequestRead:
    station = _station(session, principal, code)
    request = session.get(OcppSwapRequest, request_id)
    if request is None or request.station_id != station.id:
        raise SwapRequestNotFound(f"station {code!r} has no swap request {request_id}")
    return _request_read(session, station, request)
