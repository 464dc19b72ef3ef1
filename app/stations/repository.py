from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.core.keyset import AnyRow, AnySelect, after_cursor
from app.models import Battery, Organization, PackType, Slot, Station, StationStatus

SelectT = TypeVar("SelectT", bound=AnySelect)


def readable_statement(principal: Principal, statement: SelectT) -> SelectT:
    """`statement` (of stations) narrowed to the stations a key may see: an operator its own
    organization's; admin and OEM keys every station."""
    if principal.operator_scope is not None:
        statement = statement.where(Station.operator_id == principal.operator_scope)
    return statement


def get_station(session: Session, code: str) -> Station | None:
    return session.scalar(select(Station).where(Station.code == code))


def get_readable_station(
    session: Session, principal: Principal, code: str, *, for_update: bool = False
) -> Station | None:
    statement = readable_statement(principal, select(Station).where(Station.code == code))
    if for_update:
        statement = statement.with_for_update()
    return session.scalar(statement)


def _station_rows() -> AnySelect:
    slot_count = (
        select(func.count(Slot.id))
        .where(Slot.station_id == Station.id)
        .correlate(Station)
        .scalar_subquery()
    )
    return select(Station, Organization.code, slot_count).join(
        Organization, Organization.id == Station.operator_id
    )


def station_row(session: Session, code: str) -> AnyRow | None:
    """The station with its operator's code and its number of slots."""
    return session.execute(_station_rows().where(Station.code == code)).one_or_none()


def list_station_rows(
    session: Session,
    principal: Principal,
    *,
    operator_code: str | None,
    status: StationStatus | None,
    cursor: str | None,
    limit: int,
) -> Sequence[AnyRow]:
    statement = readable_statement(principal, _station_rows())
    if operator_code is not None:
        statement = statement.where(Organization.code == operator_code)
    if status is not None:
        statement = statement.where(Station.status == status)
    return session.execute(after_cursor(statement, Station.code, cursor, limit)).all()


def _slot_rows(station_id: int) -> AnySelect:
    return (
        select(
            Slot,
            Battery.serial,
            PackType.code,
            Battery.state,
            Battery.soc_pct,
            Battery.soh_pct,
            Battery.oem_id,
        )
        .outerjoin(Battery, Battery.slot_id == Slot.id)
        .outerjoin(PackType, PackType.id == Battery.pack_type_id)
        .where(Slot.station_id == station_id)
    )


def list_slot_rows(
    session: Session, station_id: int, *, cursor: str | None, limit: int
) -> Sequence[AnyRow]:
    statement = after_cursor(_slot_rows(station_id), Slot.number, cursor, limit, int)
    return session.execute(statement).all()


def slot_row(session: Session, station_id: int, number: int) -> AnyRow | None:
    return session.execute(_slot_rows(station_id).where(Slot.number == number)).one_or_none()


def get_slot(session: Session, station_id: int, number: int) -> Slot | None:
    return session.scalar(select(Slot).where(Slot.station_id == station_id, Slot.number == number))


def max_slot_number(session: Session, station_id: int) -> int:
    return (
        session.scalar(
            select(func.coalesce(func.max(Slot.number), 0)).where(Slot.station_id == station_id)
        )
        or 0
    )
