"""Which stored records a key may read: one rule for battery telemetry and charging sessions."""

from typing import Any

from sqlalchemy import Exists, Select, exists, select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.core.keyset import AnySelect
from app.models import Battery, CustodyEvent, KeyRole, Slot, Station


def _own_station_ids(operator_id: int | None) -> Select[int]:
    return select(Station.id).where(Station.operator_id == operator_id)


def _was_in_own_slots(battery_id: int, operator_id: int | None) -> Exists:
    return exists().where(
        CustodyEvent.battery_id == battery_id,
        CustodyEvent.to_slot_id == Slot.id,
        Slot.station_id.in_(_own_station_ids(operator_id)),
    )


def may_read_battery(session: Session, principal: Principal, battery: Battery) -> bool:
    """Admins read every battery; an OEM its own program's; an operator the batteries it owns
    and every battery that has been in one of its stations' slots."""
    if principal.is_admin:
        return True
    if principal.role is KeyRole.oem:
        return battery.oem_id == principal.organization_id
    if battery.owner_id == principal.organization_id:
        return True
    return bool(session.scalar(_was_in_own_slots(battery.id, principal.organization_id).select()))


def readable_records(
    statement: AnySelect, station_id: Any, principal: Principal, battery: Battery
) -> AnySelect:
    """Narrow a query of one battery's station records to those the key may read.

    An operator that does not own the battery reads the records its own stations wrote, that
    is what the battery did while it was in their slots (the ingest stores a station's record
    only for a battery in its slots at the record's time). After the battery has left, the
    operator still reads those records and nothing written elsewhere: not what another
    operator's station measured, before or after. Owners, OEMs and admins read every record
    of a battery they may read.
    """
    if principal.role is not KeyRole.operator or battery.owner_id == principal.organization_id:
        return statement
    return statement.where(station_id.in_(_own_station_ids(principal.organization_id)))
