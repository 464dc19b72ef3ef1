import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Row, Select, and_, or_, select
from sqlalchemy.orm import Session, aliased

from app.batteries import repository as battery_repo
from app.models import (
    Battery,
    BatteryState,
    Slot,
    Station,
    SwapEvent,
    SwapOutcome,
    Vehicle,
    vehicle_model_pack_types,
)

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


def get_swap_row(
    session: Session, swap_id: uuid.UUID, *, viewer_oem_id: int | None
) -> SwapRow | None:
    query = swap_rows(viewer_oem_id).where(SwapEvent.id == swap_id)
    return session.execute(query).one_or_none()


def list_swap_rows(
    session: Session,
    *,
    station_ids_of_operator: int | None,
    oem_id: int | None,
    station_code: str | None,
    vin: str | None,
    battery_serial: str | None,
    outcome: SwapOutcome | None,
    reason_code: str | None,
    started_from: datetime | None,
    started_to: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[SwapRow]:
    query = swap_rows(oem_id)
    if station_ids_of_operator is not None:
        query = query.where(Station.operator_id == station_ids_of_operator)
    if oem_id is not None:
        query = query.where(
            SwapEvent.vehicle_id.in_(select(Vehicle.id).where(Vehicle.oem_id == oem_id))
        )
    if station_code is not None:
        query = query.where(Station.code == station_code)
    if vin is not None:
        query = query.where(SwapEvent.vin == vin)
    if battery_serial is not None:
        # On the serials the viewer may read: a foreign serial finds nothing for an OEM.
        query = query.where(
            or_(
                battery_repo.readable_serial(SwapEvent.removed_battery_serial, oem_id)
                == battery_serial,
                battery_repo.readable_serial(SwapEvent.installed_battery_serial, oem_id)
                == battery_serial,
            )
        )
    if outcome is not None:
        query = query.where(SwapEvent.outcome == outcome)
    if reason_code is not None:
        query = query.where(SwapEvent.reason_code == reason_code)
    if started_from is not None:
        query = query.where(SwapEvent.started_at >= started_from)
    if started_to is not None:
        query = query.where(SwapEvent.started_at < started_to)
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


def lock_vehicle(session: Session, vin: str) -> Vehicle | None:
    return session.scalar(
        select(Vehicle)
        .where(Vehicle.vin == vin)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def compatible_pack_type_ids(session: Session, vehicle_model_id: int) -> set[int]:
    return set(
        session.scalars(
            select(vehicle_model_pack_types.c.pack_type_id).where(
                vehicle_model_pack_types.c.vehicle_model_id == vehicle_model_id
            )
        )
    )


def lock_best_available_battery(
    session: Session,
    *,
    station_id: int,
    pack_type_ids: set[int],
    min_soc_pct: float,
    min_soh_pct: float,
) -> Battery | None:
    """Highest SoC first, then fewest full-equivalent cycles (wear levelling).

    SKIP LOCKED makes concurrent swaps at one station pass over a battery another swap is
    already handing out instead of waiting for it, so two swaps never get the same one.
    """
    return session.scalar(
        select(Battery)
        .join(Slot, Slot.id == Battery.slot_id)
        .where(
            Slot.station_id == station_id,
            Slot.enabled.is_(True),
            Battery.state == BatteryState.in_service,
            Battery.pack_type_id.in_(pack_type_ids),
            Battery.soc_pct >= min_soc_pct,
            or_(Battery.soh_pct.is_(None), Battery.soh_pct >= min_soh_pct),
        )
        .order_by(
            Battery.soc_pct.desc(), Battery.equivalent_full_cycles.asc(), Battery.serial.asc()
        )
        .limit(1)
        .with_for_update(of=Battery, skip_locked=True)
        .execution_options(populate_existing=True)
    )
