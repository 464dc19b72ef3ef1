"""Stations and their slots.

Visibility: an operator key sees and changes only its own organization's stations (another
operator's station is 404). Admin keys see everything. OEM keys may read stations and
slots, because where a station is and what it has charged is what an OEM needs to route
its vehicles; they never see serials or health of other OEMs' batteries, and like every
OEM key they cannot write.
"""

from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.core.errors import Forbidden
from app.core.integrity import flush_or_raise
from app.core.keyset import AnyRow
from app.core.pagination import Page, page_of
from app.models import OrgRole, Slot, Station, StationStatus
from app.ocpp import service as ocpp_service
from app.organizations import service as organization_service
from app.stations import repository
from app.stations.exceptions import (
    OperatorCodeRequired,
    SlotNotFound,
    SlotsChanged,
    StationExists,
    StationNotFound,
    TooManySlots,
)
from app.stations.schemas import (
    MAX_SLOTS,
    SlotFault,
    SlotRead,
    StationCreate,
    StationRead,
    StationUpdate,
)


def _not_found(code: str) -> StationNotFound:
    return StationNotFound(f"station {code!r} not found")


def _station_read(row: AnyRow) -> StationRead:
    station, operator_code, slot_count = row
    return StationRead(
        code=station.code,
        name=station.name,
        operator_code=operator_code,
        latitude=station.latitude,
        longitude=station.longitude,
        timezone=station.timezone,
        status=station.status,
        target_soc_pct=station.target_soc_pct,
        online=station.online,
        last_seen_at=station.last_seen_at,
        slot_count=slot_count,
        created_at=station.created_at,
        updated_at=station.updated_at,
    )


def _slot_read(row: AnyRow, principal: Principal) -> SlotRead:
    slot, serial, pack_type_code, state, soc_pct, soh_pct, battery_oem_id = row
    # Availability (pack type, charge) helps an OEM route vehicles; identity and health of
    # a battery belong to its OEM and owner only.
    hide = principal.oem_scope not in (None, battery_oem_id)
    return SlotRead(
        number=slot.number,
        enabled=slot.enabled,
        occupied=serial is not None,
        battery_serial=None if hide else serial,
        pack_type_code=pack_type_code,
        battery_state=state,
        soc_pct=soc_pct,
        soh_pct=None if hide else soh_pct,
        connector_status=slot.connector_status,
        connector_status_at=slot.connector_status_at,
        fault=(
            SlotFault(code=slot.fault_code, info=slot.fault_info, reported_at=slot.fault_at)
            if slot.fault_code is not None and slot.fault_at is not None
            else None
        ),
    )


def _visible_station(
    session: Session, principal: Principal, code: str, *, for_update: bool = False
) -> Station:
    station = repository.get_readable_station(session, principal, code, for_update=for_update)
    if station is None:
        raise _not_found(code)
    return station


def read_station(session: Session, principal: Principal, code: str) -> StationRead:
    station = _visible_station(session, principal, code)
    row = repository.station_row(session, station.code)
    assert row is not None  # just found, in this transaction
    return _station_read(row)


def list_stations(
    session: Session,
    principal: Principal,
    *,
    operator_code: str | None,
    status: StationStatus | None,
    cursor: str | None,
    limit: int,
) -> Page[StationRead]:
    rows = repository.list_station_rows(
        session,
        principal,
        operator_code=operator_code,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    return page_of(rows, limit, read=_station_read, key=lambda row: (row[0].code,))


def _operator_for_new_station(session: Session, principal: Principal, data: StationCreate) -> int:
    if principal.operator_scope is not None:
        if data.operator_code is not None and data.operator_code != principal.organization_code:
            raise Forbidden(
                f"operator_code: this key creates stations only for "
                f"{principal.organization_code!r}, not {data.operator_code!r}"
            )
        return principal.operator_scope
    if data.operator_code is None:
        raise OperatorCodeRequired("operator_code: required when an admin key creates a station")
    operator = organization_service.resolve_reference(
        session, data.operator_code, role=OrgRole.operator, field="operator_code"
    )
    return operator.id


def create_station(session: Session, principal: Principal, data: StationCreate) -> StationRead:
    operator_id = _operator_for_new_station(session, principal, data)
    exists = StationExists(f"station {data.code!r} already exists")
    if repository.get_station(session, data.code) is not None:
        raise exists
    station = Station(
        operator_id=operator_id,
        code=data.code,
        name=data.name,
        latitude=data.latitude,
        longitude=data.longitude,
        timezone=data.timezone,
        status=data.status,
        target_soc_pct=data.target_soc_pct,
    )
    session.add(station)
    flush_or_raise(session, exists)
    session.add_all(Slot(station_id=station.id, number=n) for n in range(1, data.slot_count + 1))
    session.flush()
    return read_station(session, principal, data.code)


def update_station(
    session: Session, principal: Principal, code: str, data: StationUpdate
) -> StationRead:
    station = _visible_station(session, principal, code)
    previous_target = station.target_soc_pct
    for field, value in data.model_dump(exclude_unset=True).items():
        setattr(station, field, value)
    session.flush()
    if station.target_soc_pct != previous_target:
        # A station connected over OCPP is told (SetVariables, docs/ocpp.md).
        ocpp_service.queue_target_soc(session, station.id, station.target_soc_pct)
    return read_station(session, principal, code)


def list_slots(
    session: Session, principal: Principal, code: str, *, cursor: str | None, limit: int
) -> Page[SlotRead]:
    station = _visible_station(session, principal, code)
    rows = repository.list_slot_rows(session, station.id, cursor=cursor, limit=limit)
    return page_of(
        rows, limit, read=lambda row: _slot_read(row, principal), key=lambda row: (row[0].number,)
    )


def add_slots(session: Session, principal: Principal, code: str, count: int) -> list[SlotRead]:
    # The row lock serialises concurrent additions to one station, so numbers never clash.
    station = _visible_station(session, principal, code, for_update=True)
    last = repository.max_slot_number(session, station.id)
    if last + count > MAX_SLOTS:
        raise TooManySlots(
            f"count: station {code!r} has {last} slots; adding {count} would exceed {MAX_SLOTS}"
        )
    numbers = range(last + 1, last + count + 1)
    session.add_all(Slot(station_id=station.id, number=n) for n in numbers)
    flush_or_raise(session, SlotsChanged(f"slots of station {code!r} changed; retry"))
    return [
        SlotRead(
            number=n,
            enabled=True,
            occupied=False,
            battery_serial=None,
            pack_type_code=None,
            battery_state=None,
            soc_pct=None,
            soh_pct=None,
            connector_status=None,
            connector_status_at=None,
            fault=None,
        )
        for n in numbers
    ]


def update_slot(
    session: Session, principal: Principal, code: str, number: int, *, enabled: bool
) -> SlotRead:
    station = _visible_station(session, principal, code)
    slot = repository.get_slot(session, station.id, number)
    if slot is None:
        raise SlotNotFound(f"station {code!r} has no slot {number}")
    changed = slot.enabled != enabled
    slot.enabled = enabled
    session.flush()
    if changed:
        # A station connected over OCPP is told (ChangeAvailability, docs/ocpp.md).
        ocpp_service.queue_availability_change(session, station.id, number, enabled)
    row = repository.slot_row(session, station.id, number)
    assert row is not None
    return _slot_read(row, principal)
