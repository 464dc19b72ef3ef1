"""The one place that changes where a battery is or what state it is in.

Every change goes through `relocate` / `change_state`, so the custody history can never
miss a move. Callers lock the battery row first (`lock_battery`, or `lock_batteries` for several).
"""

# Except a swap's two moves: they live in the SQL function swapfleet_record_swap (migration
# a6d2f8c4e1b9), which writes the same two custody_events rows relocate() would.

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Battery, BatteryState, CustodyCause, CustodyEvent, LocationKind
from app.models.base import utcnow


def lock_battery(session: Session, serial: str) -> Battery | None:
    # populate_existing: a battery already loaded in this session must show the row as it is
    # once the lock is ours, not as it was before a concurrent writer committed.
    return session.scalar(
        select(Battery)
        .where(Battery.serial == serial)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def lock_batteries(session: Session, serials: Sequence[str]) -> dict[str, Battery]:
    """Several batteries at once, by serial: in serial order, the order the ingest locks a
    batch's batteries in (app/ingest/writer.py lock_batteries) and a swap naming its installed
    battery locks both in (swapfleet_record_swap). Taken one by one in another order, they
    could form a cycle with those."""
    batteries = session.scalars(
        select(Battery)
        .where(Battery.serial.in_(serials))
        .order_by(Battery.serial)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {battery.serial: battery for battery in batteries}


def relocate(
    session: Session,
    battery: Battery,
    *,
    kind: LocationKind,
    cause: CustodyCause,
    slot_id: int | None = None,
    vehicle_id: int | None = None,
    note: str | None = None,
    swap_id: uuid.UUID | None = None,
    api_key_id: int | None = None,
    at: datetime | None = None,
    flush: bool = True,
) -> CustodyEvent:
    """`flush=False` leaves the flush to a caller that changes more before it."""
    event = CustodyEvent(
        battery_id=battery.id,
        at=at or utcnow(),
        cause=cause,
        from_kind=battery.location_kind,
        from_slot_id=battery.slot_id,
        from_vehicle_id=battery.vehicle_id,
        to_kind=kind,
        to_slot_id=slot_id,
        to_vehicle_id=vehicle_id,
        state_from=battery.state,
        state_to=battery.state,
        swap_id=swap_id,
        api_key_id=api_key_id,
        note=note,
    )
    battery.location_kind = kind
    battery.slot_id = slot_id
    battery.vehicle_id = vehicle_id
    battery.location_note = (
        note if kind in (LocationKind.warehouse, LocationKind.in_transit) else None
    )
    session.add(event)
    # Flush each move on its own: the unique indexes on slot_id / vehicle_id are checked
    # per statement, so a swap must free a place before it fills it.
    if flush:
        session.flush()
    return event


def change_state(
    session: Session,
    battery: Battery,
    *,
    state: BatteryState,
    cause: CustodyCause,
    note: str | None = None,
    api_key_id: int | None = None,
    at: datetime | None = None,
) -> CustodyEvent:
    event = CustodyEvent(
        battery_id=battery.id,
        at=at or utcnow(),
        cause=cause,
        from_kind=battery.location_kind,
        from_slot_id=battery.slot_id,
        from_vehicle_id=battery.vehicle_id,
        to_kind=battery.location_kind,
        to_slot_id=battery.slot_id,
        to_vehicle_id=battery.vehicle_id,
        state_from=battery.state,
        state_to=state,
        api_key_id=api_key_id,
        note=note,
    )
    battery.state = state
    session.add(event)
    session.flush()
    return event


def record_registration(
    session: Session,
    battery: Battery,
    *,
    api_key_id: int | None = None,
    note: str | None = None,
) -> CustodyEvent:
    event = CustodyEvent(
        battery_id=battery.id,
        at=utcnow(),
        cause=CustodyCause.registered,
        from_kind=None,
        to_kind=battery.location_kind,
        to_slot_id=battery.slot_id,
        to_vehicle_id=battery.vehicle_id,
        state_from=None,
        state_to=battery.state,
        api_key_id=api_key_id,
        note=note if note is not None else battery.location_note,
    )
    session.add(event)
    session.flush()
    return event
