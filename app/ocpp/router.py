"""REST around the OCPP gateway: the idToken -> vehicle mapping it authorizes with, and the
custody exceptions it flags (docs/ocpp.md)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import TypeAdapter
from sqlalchemy import select

from app.auth.dependencies import WriterPrincipal
from app.db import SessionDep
from app.errors import Forbidden, NotFound, Unauthorized, problem_responses
from app.models import CustodyException, KeyRole, Station
from app.ocpp import service
from app.ocpp.schemas import CustodyExceptionRead, IdTokenPut, IdTokenRead
from app.pagination import Cursor, CursorInt, Limit, Page, decode_cursor, encode_cursor

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
