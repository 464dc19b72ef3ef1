"""Swap rules and the custody change of a completed swap.

A swap moves two batteries at once: the depleted one out of the vehicle into the slot the
charged one leaves, and the charged one into the vehicle. Rejected attempts are recorded
too, so operators and OEMs can see them.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.batteries.custody import lock_battery, relocate
from app.config import get_settings
from app.errors import Forbidden
from app.models import (
    Battery,
    BatteryState,
    CustodyCause,
    KeyRole,
    LocationKind,
    Slot,
    Station,
    StationStatus,
    SwapEvent,
    SwapOutcome,
    Vehicle,
)
from app.models.base import utcnow
from app.swaps import repository
from app.swaps.exceptions import StationNotFound, SwapNotFound
from app.swaps.schemas import SwapCreate, SwapRead
from app.vehicles import repository as vehicle_repository


@dataclass
class Rejection(Exception):
    reason_code: str
    detail: str


def get_station_for_swap(session: Session, principal: Principal, station_code: str) -> Station:
    station = session.scalar(select(Station).where(Station.code == station_code))
    if station is None:
        raise StationNotFound(f"station {station_code!r} not found")
    principal.require_role(KeyRole.admin, KeyRole.operator)
    if not principal.is_admin and station.operator_id != principal.organization_id:
        raise Forbidden(f"station {station_code!r} is run by another operator")
    return station


def record_swap(session: Session, principal: Principal, request: SwapCreate) -> SwapRead:
    """Records a completed swap, or a rejected one with its reason code; never raises for a
    rule violation, so that the rejection is committed with the request. The answer is built
    from the rows this transaction holds, without reading the swap back."""
    station = get_station_for_swap(session, principal, request.station_code)
    started_at = request.started_at or utcnow()
    swap = SwapEvent(
        id=uuid.uuid4(),
        station_id=station.id,
        vin=request.vin,
        removed_battery_serial=request.removed_battery_serial,
        removed_soc_pct=request.removed_soc_pct,
        removed_soh_pct=request.removed_soh_pct,
        installed_battery_serial=request.installed_battery_serial,
        installed_soc_pct=request.installed_soc_pct,
        installed_soh_pct=request.installed_soh_pct,
        started_at=started_at,
        finished_at=request.finished_at,
    )
    try:
        vehicle, removed, installed = _check_rules(session, station, request, swap)
    except Rejection as rejection:
        swap.outcome = SwapOutcome.rejected
        swap.reason_code = rejection.reason_code
        swap.detail = rejection.detail
        swap.finished_at = swap.finished_at or utcnow()
        session.add(swap)
        session.flush()
        return recorded_read(swap, station.code, slot_number=None)

    swap.outcome = SwapOutcome.completed
    swap.vehicle_id = vehicle.id
    swap.removed_battery_id = removed.id
    swap.installed_battery_id = installed.id
    swap.installed_battery_serial = installed.serial
    swap.installed_from_slot_id = installed.slot_id
    swap.removed_to_slot_id = installed.slot_id
    swap.finished_at = request.finished_at or utcnow()
    if swap.installed_soc_pct is None:
        swap.installed_soc_pct = installed.soc_pct
    if swap.installed_soh_pct is None:
        swap.installed_soh_pct = installed.soh_pct
    slot_number = _exchange(session, swap, vehicle, removed, installed, principal)
    return recorded_read(swap, station.code, slot_number)


def _check_rules(
    session: Session, station: Station, request: SwapCreate, swap: SwapEvent
) -> tuple[Vehicle, Battery, Battery]:
    if station.status is not StationStatus.active:
        raise Rejection("StationUnavailable", f"station {station.code} is {station.status}")

    # Lock order: vehicle, then removed battery, then installed battery. Every swap takes
    # them in this order, so two swaps cannot deadlock on each other.
    vehicle = repository.lock_vehicle(session, request.vin)
    if vehicle is None:
        raise Rejection("VehicleUnknown", f"no vehicle with VIN {request.vin}")
    swap.vehicle_id = vehicle.id

    removed = lock_battery(session, request.removed_battery_serial)
    if removed is None:
        raise Rejection(
            "BatteryUnknown", f"no battery with serial {request.removed_battery_serial}"
        )
    swap.removed_battery_id = removed.id
    if removed.vehicle_id != vehicle.id:
        actual = vehicle_repository.installed_battery(session, vehicle.id)
        carried = actual.serial if actual else "no battery"
        raise Rejection(
            "BatteryMismatch",
            f"battery {removed.serial} is not installed in vehicle {vehicle.vin} "
            f"(the vehicle carries {carried})",
        )

    compatible = repository.compatible_pack_type_ids(session, vehicle.model_id)
    min_soh = get_settings().swap_min_soh_pct
    if request.installed_battery_serial is None:
        installed = repository.lock_best_available_battery(
            session,
            station_id=station.id,
            pack_type_ids=compatible,
            min_soc_pct=station.target_soc_pct,
            min_soh_pct=min_soh,
        )
        if installed is None:
            raise Rejection(
                "NoBatteryAvailable",
                f"station {station.code} holds no in-service battery compatible with "
                f"vehicle {vehicle.vin} at or above {station.target_soc_pct:g}% SoC "
                f"and {min_soh:g}% SoH",
            )
        swap.installed_battery_id = installed.id
        return vehicle, removed, installed

    installed = lock_battery(session, request.installed_battery_serial)
    if installed is None:
        raise Rejection(
            "BatteryUnknown", f"no battery with serial {request.installed_battery_serial}"
        )
    swap.installed_battery_id = installed.id
    _check_installable(session, station, installed, compatible, request, min_soh)
    return vehicle, removed, installed


def _check_installable(
    session: Session,
    station: Station,
    battery: Battery,
    compatible: set[int],
    request: SwapCreate,
    min_soh: float,
) -> None:
    slot = session.get(Slot, battery.slot_id) if battery.slot_id is not None else None
    if slot is None or slot.station_id != station.id:
        raise Rejection(
            "BatteryNotAtStation", f"battery {battery.serial} is not in a slot of {station.code}"
        )
    if not slot.enabled:
        raise Rejection(
            "BatteryNotAtStation",
            f"battery {battery.serial} sits in disabled slot {slot.number} of {station.code}",
        )
    if battery.state is not BatteryState.in_service:
        raise Rejection("BatteryDamaged", f"battery {battery.serial} is {battery.state}")
    if battery.pack_type_id not in compatible:
        raise Rejection(
            "BatteryType",
            f"battery {battery.serial}'s pack type does not fit vehicle {request.vin}'s model",
        )
    soc = request.installed_soc_pct if request.installed_soc_pct is not None else battery.soc_pct
    if soc is None or soc < station.target_soc_pct:
        shown = "unknown" if soc is None else f"{soc:g}%"
        raise Rejection(
            "BatterySoC",
            f"battery {battery.serial} is at {shown} SoC, below the station's target "
            f"{station.target_soc_pct:g}%",
        )
    soh = request.installed_soh_pct if request.installed_soh_pct is not None else battery.soh_pct
    if soh is not None and soh < min_soh:
        raise Rejection(
            "BatterySoHLow",
            f"battery {battery.serial} is at {soh:g}% SoH, below the floor of {min_soh:g}%",
        )


def _exchange(
    session: Session,
    swap: SwapEvent,
    vehicle: Vehicle,
    removed: Battery,
    installed: Battery,
    principal: Principal,
) -> int:
    """Records the swap and moves both batteries in three flushes, the fewest the unique
    indexes allow (one battery per slot, one per vehicle, checked per statement); returns the
    number of the slot that changed batteries."""
    freed_slot_id = installed.slot_id
    assert freed_slot_id is not None
    slot_number = session.execute(select(Slot.number).where(Slot.id == freed_slot_id)).scalar_one()
    at = swap.finished_at or swap.started_at
    _apply_readings(removed, swap.removed_soc_pct, swap.removed_soh_pct, at)
    _apply_readings(installed, swap.installed_soc_pct, swap.installed_soh_pct, at)
    # The charged battery leaves its slot first (with the swap's own row, in one flush), so
    # that both unique indexes hold after every statement.
    installed.location_kind = LocationKind.in_transit
    installed.slot_id = None
    session.add(swap)
    session.flush()
    relocate(
        session,
        removed,
        kind=LocationKind.slot,
        slot_id=freed_slot_id,
        cause=CustodyCause.swap,
        swap_id=swap.id,
        api_key_id=principal.api_key_id,
        at=at,
    )
    event = relocate(
        session,
        installed,
        kind=LocationKind.vehicle,
        vehicle_id=vehicle.id,
        cause=CustodyCause.swap,
        swap_id=swap.id,
        api_key_id=principal.api_key_id,
        at=at,
        flush=False,
    )
    # The history shows the real move (slot -> vehicle), not the in-transit moment above.
    event.from_kind = LocationKind.slot
    event.from_slot_id = freed_slot_id
    session.flush()
    return slot_number


def _apply_readings(battery: Battery, soc: float | None, soh: float | None, at: datetime) -> None:
    if battery.readings_at is not None and battery.readings_at > at:
        return
    if soc is not None:
        battery.soc_pct = soc
    if soh is not None:
        battery.soh_pct = soh
    if soc is not None or soh is not None:
        battery.readings_at = at


def recorded_read(swap: SwapEvent, station_code: str, slot_number: int | None) -> SwapRead:
    """A swap just recorded: a completed swap's removed battery went into the slot its
    installed battery came from. Only admin and operator keys record swaps, and they read
    every serial (to_read hides other programs' serials from OEM keys only)."""
    return _swap_read(
        swap,
        station_code,
        removed_to_slot_number=slot_number,
        installed_from_slot_number=slot_number,
        removed_serial=swap.removed_battery_serial,
        installed_serial=swap.installed_battery_serial,
    )


def to_read(row: repository.SwapRow) -> SwapRead:
    return _swap_read(
        row[0],
        row.station_code,
        removed_to_slot_number=row.removed_to_slot_number,
        installed_from_slot_number=row.installed_from_slot_number,
        removed_serial=row.removed_serial_readable,
        installed_serial=row.installed_serial_readable,
    )


def _swap_read(
    swap: SwapEvent,
    station_code: str,
    *,
    removed_to_slot_number: int | None,
    installed_from_slot_number: int | None,
    removed_serial: str | None,
    installed_serial: str | None,
) -> SwapRead:
    """The serials as the viewer may read them; a battery's readings go with its serial,
    hidden together when the viewer may not read it."""
    removed = removed_serial == swap.removed_battery_serial
    installed = installed_serial == swap.installed_battery_serial
    return SwapRead(
        id=swap.id,
        station_code=station_code,
        vin=swap.vin,
        outcome=swap.outcome,
        reason_code=swap.reason_code,
        detail=swap.detail,
        removed_battery_serial=removed_serial,
        removed_soc_pct=swap.removed_soc_pct if removed else None,
        removed_soh_pct=swap.removed_soh_pct if removed else None,
        removed_to_slot_number=removed_to_slot_number,
        installed_battery_serial=installed_serial,
        installed_soc_pct=swap.installed_soc_pct if installed else None,
        installed_soh_pct=swap.installed_soh_pct if installed else None,
        installed_from_slot_number=installed_from_slot_number,
        started_at=swap.started_at,
        finished_at=swap.finished_at,
        created_at=swap.created_at,
    )


def read_swap(session: Session, principal: Principal, swap_id: uuid.UUID) -> SwapRead:
    viewer_oem_id = principal.organization_id if principal.role is KeyRole.oem else None
    row = repository.get_swap_row(session, swap_id, viewer_oem_id=viewer_oem_id)
    if row is None or not _visible(session, principal, row):
        raise SwapNotFound(f"swap {swap_id} not found")
    return to_read(row)


def _visible(session: Session, principal: Principal, row: repository.SwapRow) -> bool:
    if principal.is_admin:
        return True
    swap: SwapEvent = row[0]
    if principal.role is KeyRole.operator:
        station = session.get(Station, swap.station_id)
        return station is not None and station.operator_id == principal.organization_id
    if swap.vehicle_id is None:
        return False
    vehicle = session.get(Vehicle, swap.vehicle_id)
    return vehicle is not None and vehicle.oem_id == principal.organization_id
