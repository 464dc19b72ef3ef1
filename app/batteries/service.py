"""Rules for registering, moving and retiring batteries.

Location and state change only through `app.batteries.custody`, so every change leaves a
custody event. Each check here gives a clear error first; the database's unique indexes and
check constraints still decide under concurrency, and their violations become the same 409s.
"""

import dataclasses
from contextlib import AbstractContextManager
from datetime import datetime

from pydantic import TypeAdapter
from sqlalchemy import RowMapping
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.batteries import custody
from app.batteries import repository as repo
from app.batteries.exceptions import (
    AdminOnlyField,
    BatteryInUse,
    BatteryNotFound,
    BatteryOutOfScope,
    BatteryQuarantined,
    BatteryRetired,
    BatterySerialTaken,
    BatteryTypeMismatch,
    DestinationOutOfScope,
    InvalidStateTransition,
    OrganizationRoleMismatch,
    SlotDisabled,
    SlotOccupied,
    UnknownReference,
    VehicleHasBattery,
)
from app.batteries.schemas import (
    BatteryCreate,
    BatteryFilter,
    BatteryRead,
    BatteryUpdate,
    CustodyEventRead,
    InTransitPlace,
    LocationRead,
    Place,
    SlotPlace,
    VehiclePlace,
)
from app.core.db import NamedRow, Statements
from app.core.integrity import refused_writes
from app.core.pagination import CursorInt, CursorTime, Page, decode_cursor, page_of
from app.models import Battery, BatteryState, CustodyCause, LocationKind, OrgRole, ReadingSource

# Places a battery can be that belong to no station: any operator may handle it there.
UNATTACHED = (LocationKind.warehouse, LocationKind.in_transit)


@dataclasses.dataclass(frozen=True)
class Destination:
    kind: LocationKind
    slot_id: int | None = None
    vehicle_id: int | None = None
    note: str | None = None


# ---------------------------------------------------------------- reads


def _location_read(
    kind: LocationKind,
    station_code: str | None,
    slot_number: int | None,
    vin: str | None,
    note: str | None = None,
) -> LocationRead:
    return LocationRead(
        kind=kind, station_code=station_code, slot_number=slot_number, vin=vin, note=note
    )


def _battery_read(row: NamedRow) -> BatteryRead:
    location = _location_read(
        row["location_kind"],
        row["station_code"],
        row["slot_number"],
        row["vin"],
        row["location_note"],
    )
    return BatteryRead(
        serial=row["serial"],
        pack_type_code=row["pack_type_code"],
        owner_code=row["owner_code"],
        oem_code=row["oem_code"],
        manufactured_on=row["manufactured_on"],
        state=row["state"],
        location=location,
        soc_pct=row["soc_pct"],
        soh_pct=row["soh_pct"],
        equivalent_full_cycles=row["equivalent_full_cycles"],
        readings_at=row["readings_at"],
        soc_measured_at=row["soc_measured_at"],
        soh_measured_at=row["soh_measured_at"],
        soh_source=row["soh_source"],
        cycles_measured_at=row["cycles_measured_at"],
        cycles_source=row["cycles_source"],
    )


def get_battery(session: Session, principal: Principal, serial: str) -> BatteryRead:
    return _found(repo.battery_view(session, serial, oem_id=principal.oem_scope), serial)


async def read_battery(statements: Statements, principal: Principal, serial: str) -> BatteryRead:
    """get_battery for the async route."""
    row = await repo.read_battery_view(statements, serial, oem_id=principal.oem_scope)
    return _found(row, serial)


def _found(row: NamedRow | None, serial: str) -> BatteryRead:
    # An OEM asking for another program's battery gets the same 404 as for a missing one.
    if row is None:
        raise BatteryNotFound(f"battery {serial!r} not found")
    return _battery_read(row)


def list_batteries(
    session: Session,
    principal: Principal,
    filters: BatteryFilter,
    *,
    cursor: str | None,
    limit: int,
) -> Page[BatteryRead]:
    rows = repo.list_battery_views(session, principal, filters, cursor=cursor, limit=limit)
    return page_of(rows, limit, read=_battery_read, key=lambda row: (str(row["serial"]),))


_HISTORY_CURSOR = TypeAdapter(tuple[CursorTime, CursorInt])


def _history_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    return decode_cursor(cursor, _HISTORY_CURSOR)


def battery_history(
    session: Session, principal: Principal, serial: str, *, cursor: str | None, limit: int
) -> Page[CustodyEventRead]:
    after = _history_cursor(cursor)
    battery_id = repo.battery_id_for(session, principal, serial)
    if battery_id is None:
        raise BatteryNotFound(f"battery {serial!r} not found")
    rows = repo.custody_history(
        session, battery_id, after=after, limit=limit + 1, viewer_oem_id=principal.oem_scope
    )
    return page_of(
        rows, limit, read=_custody_event_read, key=lambda row: (row["at"].isoformat(), row["id"])
    )


def _custody_event_read(row: RowMapping) -> CustodyEventRead:
    return CustodyEventRead(
        at=row["at"],
        cause=row["cause"],
        from_location=_location_read(
            row["from_kind"], row["from_station_code"], row["from_slot_number"], row["from_vin"]
        )
        if row["from_kind"] is not None
        else None,
        to_location=_location_read(
            row["to_kind"], row["to_station_code"], row["to_slot_number"], row["to_vin"]
        ),
        state_from=row["state_from"],
        state_to=row["state_to"],
        swap_id=row["swap_id"],
        note=row["note"],
    )


# ---------------------------------------------------------------- references and scope


def _pack_type_id(session: Session, code: str) -> int:
    pack_type_id = repo.pack_type_id(session, code)
    if pack_type_id is None:
        raise UnknownReference(f"pack type {code!r} not found")
    return pack_type_id


def _organization_id(session: Session, code: str, role: OrgRole, field: str) -> int:
    org = repo.organization_by_code(session, code)
    if org is None:
        raise UnknownReference(f"{field}: organization {code!r} not found")
    if org.role is not role:
        raise OrganizationRoleMismatch(
            f"{field}: organization {code!r} has role {org.role}, expected {role}"
        )
    return org.id


def _require_battery_in_scope(session: Session, principal: Principal, battery: Battery) -> None:
    """Operators act on batteries at their own stations' slots or outside any station; a
    battery in a vehicle or at another operator's station is not theirs to handle."""
    if principal.is_admin or battery.location_kind in UNATTACHED:
        return
    if (
        battery.location_kind is LocationKind.slot
        and battery.slot_id is not None
        and repo.station_operator_of_slot(session, battery.slot_id) == principal.organization_id
    ):
        return
    raise BatteryOutOfScope(
        f"battery {battery.serial!r} is in a {battery.location_kind} outside this key's stations"
    )


def _resolve_destination(
    session: Session, principal: Principal, place: Place, pack_type_id: int
) -> Destination:
    if isinstance(place, SlotPlace):
        return _slot_destination(session, principal, place)
    if isinstance(place, VehiclePlace):
        return _vehicle_destination(session, principal, place, pack_type_id)
    kind = LocationKind.in_transit if isinstance(place, InTransitPlace) else LocationKind.warehouse
    return Destination(kind=kind, note=place.note)


def _slot_destination(session: Session, principal: Principal, place: SlotPlace) -> Destination:
    target = repo.slot_target(session, place.station_code, place.slot_number)
    if target is None:
        if repo.station_exists(session, place.station_code):
            raise UnknownReference(
                f"station {place.station_code!r} has no slot {place.slot_number}"
            )
        raise UnknownReference(f"station {place.station_code!r} not found")
    where = f"slot {place.slot_number} of station {place.station_code!r}"
    if not principal.is_admin and target.operator_id != principal.organization_id:
        raise DestinationOutOfScope(f"{where} belongs to another operator")
    if not target.enabled:
        raise SlotDisabled(f"{where} is disabled")
    if target.occupant_serial is not None:
        raise SlotOccupied(f"{where} already holds battery {target.occupant_serial!r}")
    return Destination(kind=LocationKind.slot, slot_id=target.slot_id, note=place.note)


def _vehicle_destination(
    session: Session, principal: Principal, place: VehiclePlace, pack_type_id: int
) -> Destination:
    if not principal.is_admin:
        # Operators put batteries into vehicles by swapping (POST /v1/swaps), which checks
        # the driver's side of the exchange too.
        raise DestinationOutOfScope("only an admin key may place a battery into a vehicle directly")
    target = repo.vehicle_target(session, place.vin, pack_type_id)
    if target is None:
        raise UnknownReference(f"vehicle {place.vin!r} not found")
    if not target.takes_pack_type:
        raise BatteryTypeMismatch(f"vehicle {place.vin!r} does not take this pack type")
    if target.occupant_serial is not None:
        raise VehicleHasBattery(
            f"vehicle {place.vin!r} already carries battery {target.occupant_serial!r}"
        )
    return Destination(kind=LocationKind.vehicle, vehicle_id=target.vehicle_id, note=place.note)


def _place_conflicts(serial: str) -> AbstractContextManager[None]:
    """A concurrent request can take the slot, the vehicle or the serial between our check and
    our write; the unique index then refuses, and the caller gets the 409 it would have got a
    moment later."""
    return refused_writes(
        expected={
            "uq_batteries_slot_id": SlotOccupied("the slot was filled by a concurrent request"),
            "uq_batteries_vehicle_id": VehicleHasBattery(
                "the vehicle got a battery in a concurrent request"
            ),
            "uq_batteries_serial": BatterySerialTaken(f"battery {serial!r} already exists"),
        }
    )


def _locked_battery(session: Session, serial: str) -> Battery:
    battery = custody.lock_battery(session, serial)
    if battery is None:
        raise BatteryNotFound(f"battery {serial!r} not found")
    return battery


# ---------------------------------------------------------------- writes


def register_battery(session: Session, principal: Principal, data: BatteryCreate) -> BatteryRead:
    pack_type_id = _pack_type_id(session, data.pack_type_code)
    owner_id = _organization_id(session, data.owner_code, OrgRole.owner, "owner_code")
    oem_id = (
        _organization_id(session, data.oem_code, OrgRole.oem, "oem_code")
        if data.oem_code is not None
        else None
    )
    if repo.serial_exists(session, data.serial):
        raise BatterySerialTaken(f"battery {data.serial!r} already exists")
    destination = _resolve_destination(session, principal, data.location, pack_type_id)
    battery = Battery(
        serial=data.serial,
        pack_type_id=pack_type_id,
        owner_id=owner_id,
        oem_id=oem_id,
        manufactured_on=data.manufactured_on,
        state=BatteryState.in_service,
        location_kind=destination.kind,
        slot_id=destination.slot_id,
        vehicle_id=destination.vehicle_id,
        location_note=destination.note if destination.kind in UNATTACHED else None,
        soc_pct=data.soc_pct,
        soh_pct=data.soh_pct,
        # Values given at registration carry no measured-at time, so any device reading
        # replaces them (app/ingest/derived.py); their source says where they came from.
        soh_source=ReadingSource.registration if data.soh_pct is not None else None,
        equivalent_full_cycles=data.equivalent_full_cycles or 0.0,
        cycles_source=(
            ReadingSource.registration if data.equivalent_full_cycles is not None else None
        ),
        registered_energy_throughput_kwh=data.energy_throughput_kwh,
        registered_capacity_throughput_ah=data.capacity_throughput_ah,
    )
    with _place_conflicts(data.serial):
        session.add(battery)
        session.flush()
    custody.record_registration(
        session, battery, api_key_id=principal.api_key_id, note=destination.note
    )
    return get_battery(session, principal, data.serial)


def update_battery(
    session: Session, principal: Principal, serial: str, data: BatteryUpdate
) -> BatteryRead:
    sent = data.model_fields_set
    if not principal.is_admin and sent & {"owner_code", "oem_code"}:
        raise AdminOnlyField("only an admin key may change owner_code or oem_code")
    battery = _locked_battery(session, serial)
    _require_battery_in_scope(session, principal, battery)
    if "owner_code" in sent and data.owner_code is not None:
        battery.owner_id = _organization_id(session, data.owner_code, OrgRole.owner, "owner_code")
    if "oem_code" in sent:
        battery.oem_id = (
            _organization_id(session, data.oem_code, OrgRole.oem, "oem_code")
            if data.oem_code is not None
            else None
        )
    if "manufactured_on" in sent:
        battery.manufactured_on = data.manufactured_on
    session.flush()
    return get_battery(session, principal, serial)


def move_battery(session: Session, principal: Principal, serial: str, place: Place) -> BatteryRead:
    battery = _locked_battery(session, serial)
    _require_battery_in_scope(session, principal, battery)
    if battery.state is BatteryState.retired and isinstance(place, SlotPlace | VehiclePlace):
        raise BatteryRetired(f"battery {serial!r} is retired")
    if battery.state is BatteryState.quarantined and isinstance(place, VehiclePlace):
        raise BatteryQuarantined(f"battery {serial!r} is quarantined")
    destination = _resolve_destination(session, principal, place, battery.pack_type_id)
    with _place_conflicts(serial):
        custody.relocate(
            session,
            battery,
            kind=destination.kind,
            cause=CustodyCause.manual_move,
            slot_id=destination.slot_id,
            vehicle_id=destination.vehicle_id,
            note=destination.note,
            api_key_id=principal.api_key_id,
        )
    return get_battery(session, principal, serial)


# Allowed lifecycle transitions: (cause, states it may start from, state it leads to).
TRANSITIONS: dict[CustodyCause, tuple[frozenset[BatteryState], BatteryState]] = {
    CustodyCause.quarantine: (frozenset({BatteryState.in_service}), BatteryState.quarantined),
    CustodyCause.release: (frozenset({BatteryState.quarantined}), BatteryState.in_service),
    CustodyCause.retire: (
        frozenset({BatteryState.in_service, BatteryState.quarantined}),
        BatteryState.retired,
    ),
}


def change_battery_state(
    session: Session,
    principal: Principal,
    serial: str,
    *,
    cause: CustodyCause,
    note: str | None,
) -> BatteryRead:
    sources, target = TRANSITIONS[cause]
    battery = _locked_battery(session, serial)
    _require_battery_in_scope(session, principal, battery)
    if battery.state not in sources:
        raise InvalidStateTransition(
            f"battery {serial!r} is {battery.state}; {cause} needs "
            + " or ".join(sorted(s.value for s in sources)),
            state=battery.state.value,
        )
    if target is BatteryState.retired and battery.location_kind not in UNATTACHED:
        # Retiring does not move the battery: taking it out of a vehicle or a slot is a move
        # of its own, made explicitly so the vehicle or station is never emptied as a side
        # effect of a lifecycle change.
        raise BatteryInUse(
            f"battery {serial!r} is in a {battery.location_kind}; move it to a warehouse or"
            " in_transit first"
        )
    custody.change_state(
        session, battery, state=target, cause=cause, note=note, api_key_id=principal.api_key_id
    )
    return get_battery(session, principal, serial)
