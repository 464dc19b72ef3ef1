import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from app.auth.dependencies import AsyncPrincipal, CurrentPrincipal
from app.core.db import AsyncUnitDep, SessionDep
from app.core.errors import PROBLEM_JSON, Forbidden, Unauthorized, problem_responses
from app.core.pagination import Cursor, Limit, Page
from app.models import SwapOutcome
from app.swaps import service
from app.swaps.exceptions import REASON_STATUS, StationNotFound, SwapNotFound
from app.swaps.idempotency import (
    IdempotencyKeyReused,
    StoredResponse,
)
from app.swaps.schemas import SwapCreate, SwapFilter, SwapRead

router = APIRouter(prefix="/swaps", tags=["swaps"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Retries with the same key return the first response and record nothing.",
    ),
]

REJECTION_DOC = (
    "The swap was rejected and recorded. `code` is the reason (OCPP 2.1 battery-swap "
    "codes where one exists): " + ", ".join(sorted(REASON_STATUS)) + ". The body also "
    "carries `swap_id` and the recorded `swap`."
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SwapRead,
    summary="Record a swap",
    description=(
        "Moves the depleted battery out of the vehicle into the slot the charged battery "
        "leaves, and the charged battery into the vehicle. Without "
        "`installed_battery_serial` the backend allocates one: among compatible, in-service "
        "batteries at the station at or above the station's target SoC and at or above the "
        "SoH floor, the highest SoC, ties broken toward the fewest full-equivalent cycles."
    ),
    responses={
        **problem_responses(Unauthorized, Forbidden, StationNotFound, IdempotencyKeyReused),
        409: {"description": REJECTION_DOC, "content": {PROBLEM_JSON: {}}},
        422: {"description": REJECTION_DOC + " Also: invalid body.", "content": {PROBLEM_JSON: {}}},
    },
)
async def create_swap(
    request: SwapCreate,
    statements: AsyncUnitDep,
    principal: AsyncPrincipal,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Async, on psycopg's pool: the claim, the swap and the stored response are three
    round trips of one transaction, committed before the response (AsyncUnitDep)."""
    response, replayed = await service.create_swap(
        statements, principal, request, idempotency_key=idempotency_key
    )
    return _render(response, replayed=replayed)


def _render(stored: StoredResponse, *, replayed: bool) -> Response:
    media_type = PROBLEM_JSON if stored.status_code >= 400 else "application/json"
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(
        stored.body, status_code=stored.status_code, media_type=media_type, headers=headers
    )


@router.get(
    "",
    response_model=Page[SwapRead],
    summary="List swaps, newest first",
    description="Operators see swaps at their own stations; OEM keys those of their vehicles.",
    responses=problem_responses(Unauthorized),
)
def list_swaps(
    session: SessionDep,
    principal: CurrentPrincipal,
    station_code: Annotated[str | None, Query(max_length=64)] = None,
    vin: Annotated[str | None, Query(max_length=17)] = None,
    battery_serial: Annotated[
        str | None, Query(max_length=64, description="Removed or installed battery")
    ] = None,
    outcome: SwapOutcome | None = None,
    reason_code: Annotated[str | None, Query(max_length=64)] = None,
    started_from: Annotated[datetime | None, Query(alias="from")] = None,
    started_to: Annotated[datetime | None, Query(alias="to")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[SwapRead]:
    filters = SwapFilter(
        station_code=station_code,
        vin=vin,
        battery_serial=battery_serial,
        outcome=outcome,
        reason_code=reason_code,
        started_from=started_from,
        started_to=started_to,
    )
    return service.list_swaps(session, principal, filters, cursor=cursor, limit=limit)


@router.get(
    "/{swap_id}",
    response_model=SwapRead,
    summary="Read one swap",
    responses=problem_responses(Unauthorized, SwapNotFound),
)
def read_swap(swap_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> SwapRead:
    return service.read_swap(session, principal, swap_id)
