import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Integer,
    Row,
    Select,
    Text,
    and_,
    bindparam,
    column,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Session, aliased
from sqlalchemy.types import TypeEngine

from app.auth.service import Principal
from app.batteries import repository as battery_repo
from app.core.db import NamedRow, Prepared, Statements, prepare
from app.models import Slot, Station, SwapEvent, Vehicle
from app.swaps.schemas import SwapFilter

# Slot numbers are null for rejected swaps (outer joins); the last two are the removed and
# installed serials as the viewer may read them (see battery_repo.readable_serial).
SwapRow = Row[SwapEvent, str, int, int, str | None, str | None]

_to_slot = aliased(Slot)
_from_slot = aliased(Slot)


def swap_rows(
    viewer_oem_id: int | None,
) -> Select[SwapEvent, str, int, int, str | None, str | None]:
    return (
        select(
            SwapEvent,
            Station.code.label("station_code"),
            _to_slot.number.label("removed_to_slot_number"),
            _from_slot.number.label("installed_from_slot_number"),
            battery_repo.readable_serial(SwapEvent.removed_battery_serial, viewer_oem_id).label(
                "removed_serial_readable"
            ),
            battery_repo.readable_serial(SwapEvent.installed_battery_serial, viewer_oem_id).label(
                "installed_serial_readable"
            ),
        )
        .join(Station, Station.id == SwapEvent.station_id)
        .outerjoin(_to_slot, _to_slot.id == SwapEvent.removed_to_slot_id)
        .outerjoin(_from_slot, _from_slot.id == SwapEvent.installed_from_slot_id)
    )


def readable_statement(
    principal: Principal,
) -> Select[SwapEvent, str, int, int, str | None, str | None]:
    """The swaps a key may read, with the serials as it may read them: an operator the swaps
    at its own stations, an OEM those of its vehicles, an admin every swap."""
    statement = swap_rows(principal.oem_scope)
    if principal.operator_scope is not None:
        statement = statement.where(Station.operator_id == principal.operator_scope)
    if principal.oem_scope is not None:
        statement = statement.where(
            SwapEvent.vehicle_id.in_(
                select(Vehicle.id).where(Vehicle.oem_id == principal.oem_scope)
            )
        )
    return statement


def get_swap_row(session: Session, principal: Principal, swap_id: uuid.UUID) -> SwapRow | None:
    query = readable_statement(principal).where(SwapEvent.id == swap_id)
    return session.execute(query).one_or_none()


def list_swap_rows(
    session: Session,
    principal: Principal,
    f: SwapFilter,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[SwapRow]:
    query = readable_statement(principal)
    if f.station_code is not None:
        query = query.where(Station.code == f.station_code)
    if f.vin is not None:
        query = query.where(SwapEvent.vin == f.vin)
    if f.battery_serial is not None:
        # On the serials the viewer may read: a foreign serial finds nothing for an OEM.
        oem_id = principal.oem_scope
        query = query.where(
            or_(
                battery_repo.readable_serial(SwapEvent.removed_battery_serial, oem_id)
                == f.battery_serial,
                battery_repo.readable_serial(SwapEvent.installed_battery_serial, oem_id)
                == f.battery_serial,
            )
        )
    if f.outcome is not None:
        query = query.where(SwapEvent.outcome == f.outcome)
    if f.reason_code is not None:
        query = query.where(SwapEvent.reason_code == f.reason_code)
    if f.started_from is not None:
        query = query.where(SwapEvent.started_at >= f.started_from)
    if f.started_to is not None:
        query = query.where(SwapEvent.started_at < f.started_to)
    if after is not None:
        # Newest first: the next page holds what sorts strictly after the last row seen.
        query = query.where(
            or_(
                SwapEvent.started_at < after[0],
                and_(SwapEvent.started_at == after[0], SwapEvent.id < after[1]),
            )
        )
    query = query.order_by(SwapEvent.started_at.desc(), SwapEvent.id.desc()).limit(limit)
    return session.execute(query).all()


# What swapfleet_record_swap (migration a6d2f8c4e1b9) returns: a status, then the recorded
# swap as SwapRead shows it.
_RECORDED_COLUMNS = (
    column("status", Text),
    column("id", UUID(as_uuid=True)),
    column("station_code", Text),
    column("vin", Text),
    column("outcome", Text),
    column("reason_code", Text),
    column("detail", Text),
    column("removed_battery_serial", Text),
    column("removed_soc_pct", Double),
    column("removed_soh_pct", Double),
    column("removed_to_slot_number", Integer),
    column("installed_battery_serial", Text),
    column("installed_soc_pct", Double),
    column("installed_soh_pct", Double),
    column("installed_from_slot_number", Integer),
    column("started_at", DateTime(timezone=True)),
    column("finished_at", DateTime(timezone=True)),
    column("created_at", DateTime(timezone=True)),
)

# The function's parameters, in its order, with their SQL types.
_RECORD_SWAP_PARAMETERS: tuple[tuple[str, TypeEngine[Any]], ...] = (
    ("station_code", Text()),
    ("vin", Text()),
    ("removed_serial", Text()),
    ("removed_soc_pct", Double()),
    ("removed_soh_pct", Double()),
    ("installed_serial", Text()),
    ("installed_soc_pct", Double()),
    ("installed_soh_pct", Double()),
    ("started_at", DateTime(timezone=True)),
    ("finished_at", DateTime(timezone=True)),
    ("now", DateTime(timezone=True)),
    ("min_soh_pct", Double()),
    ("api_key_id", BigInteger()),
    ("may_write", Boolean()),
    ("operator_id", BigInteger()),
    ("removed_to_slot", Integer()),
)


@cache
def _record_swap() -> Prepared:
    """The whole swap as one statement, compiled once: it locks, checks, moves and records in
    the database and returns one row."""
    call = func.swapfleet_record_swap(
        *(bindparam(name, type_=type_) for name, type_ in _RECORD_SWAP_PARAMETERS)
    ).table_valued(*_RECORDED_COLUMNS)
    return prepare(select(call))


async def record_swap(statements: Statements, parameters: dict[str, Any]) -> NamedRow:
    """Runs swapfleet_record_swap with the named parameters above; its one row."""
    assert parameters.keys() == {name for name, _ in _RECORD_SWAP_PARAMETERS}
    (row,) = await statements.rows(_record_swap(), parameters)
    return row
