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

import orjson
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.core.config import get_settings
from app.core.db import Statements
from app.core.errors import Forbidden, problem_body
from app.core.metrics import SWAPS
from app.core.pagination import CursorTime, Page, decode_cursor, page_of
from app.models import KeyRole, SwapEvent, SwapOutcome
from app.models.base import utcnow
from app.swaps import repository
from app.swaps.exceptions import REASON_STATUS, StationNotFound, SwapNotFound, SwapRejected
from app.swaps.idempotency import StoredResponse, claim, request_fingerprint, store
from app.swaps.schemas import SwapCreate, SwapFilter, SwapRead

SWAP_WRITERS = (KeyRole.admin, KeyRole.operator)


async def create_swap(
    statements: Statements,
    principal: Principal,
    request: SwapCreate,
    *,
    idempotency_key: str | None,
) -> tuple[StoredResponse, bool]:
    """POST /v1/swaps: the response, and whether it replays the first request of this
    Idempotency-Key. The claim, the swap and the stored response are three round trips of
    the request's one transaction."""
    fingerprint = request_fingerprint("POST", "/v1/swaps", request.model_dump(mode="json"))
    if idempotency_key is not None:
        stored = await claim(
            statements,
            api_key_id=principal.api_key_id,
            key=idempotency_key,
            fingerprint=fingerprint,
        )
        if stored is not None:
            return stored, True

    swap_read = await record_swap(statements, principal, request)
    response = swap_response(swap_read)
    if idempotency_key is not None:
        await store(
            statements,
            api_key_id=principal.api_key_id,
            key=idempotency_key,
            fingerprint=fingerprint,
            response=response,
        )
    SWAPS.labels(swap_read.outcome.value, swap_read.reason_code or "none").inc()
    return response, False


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
    statements: Statements, request: SwapCreate, *, operator_id: int, removed_to_slot: int
) -> SwapRead:
    """A swap a station reported itself (the OCPP gateway, app/ocpp): the same rules and
    records as record_swap, on behalf of the station's operator, with no API key. The removed
    battery goes into the slot the station put it in (removed_to_slot, its number), when that
    slot is free."""
    return await _record(
        statements,
        request,
        api_key_id=None,
        may_write=True,
        operator_id=operator_id,
        require_writer=lambda: None,
        removed_to_slot=removed_to_slot,
    )


async def _record(
    statements: Statements,
    request: SwapCreate,
    *,
    api_key_id: int | None,
    may_write: bool,
    operator_id: int | None,
    require_writer: Callable[[], None],
    removed_to_slot: int | None = None,
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
            "removed_to_slot": removed_to_slot,
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
    row = repository.get_swap_row(session, principal, swap_id)
    if row is None:
        raise SwapNotFound(f"swap {swap_id} not found")
    return to_read(row)


# Newest first: the started_at and id of the last swap of the previous page.
_SWAP_CURSOR = TypeAdapter(tuple[CursorTime, uuid.UUID])


def list_swaps(
    session: Session,
    principal: Principal,
    filters: SwapFilter,
    *,
    cursor: str | None,
    limit: int,
) -> Page[SwapRead]:
    after = decode_cursor(cursor, _SWAP_CURSOR)
    rows = repository.list_swap_rows(session, principal, filters, after=after, limit=limit + 1)
    return page_of(
        rows,
        limit,
        read=to_read,
        key=lambda row: (row[0].started_at.isoformat(), str(row[0].id)),
    )


def swap_response(swap: SwapRead) -> StoredResponse:
    """What the client gets, and what a replay of its Idempotency-Key gets again: the swap, or
    a problem detail with the rejection's reason code and the recorded swap."""
    payload = swap.model_dump(mode="json")
    if swap.outcome is SwapOutcome.completed:
        return StoredResponse(201, orjson.dumps(payload))
    assert swap.reason_code is not None
    status = REASON_STATUS.get(swap.reason_code, SwapRejected.status)
    body = problem_body(
        status,
        swap.reason_code,
        SwapRejected.title,
        swap.detail,
        swap_id=str(swap.id),
        swap=payload,
    )
    return StoredResponse(status, orjson.dumps(body))
