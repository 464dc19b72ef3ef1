"""What OCPP messages change in swapfleet: station passwords and connection leases, online
state, slot state, idToken -> vehicle, and battery swaps (docs/ocpp.md, message by message).

Each function takes the session of one unit of work and never commits (the gateway opens one
per message, app/ocpp/gateway.py). Swaps go through the swap service of POST /v1/swaps
(app/swaps/service.py); what the station did that the rules refuse is still recorded as it
happened, with a custody exception for the operator.
"""

import secrets
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.batteries import custody
from app.core.db import SessionStatements
from app.models import (
    Battery,
    CustodyCause,
    CustodyException,
    IdToken,
    LocationKind,
    OcppCommand,
    OcppConnection,
    OcppCredential,
    OcppSwap,
    OcppSwapRequest,
    Slot,
    Station,
    SwapEvent,
    SwapOutcome,
    Vehicle,
)
from app.models.base import utcnow
from app.provisioning.mosquitto_files import hash_password, verify_password
from app.swaps import service as swap_service
from app.swaps.schemas import SwapCreate, SwapRead

T = TypeVar("T")


@dataclass(frozen=True)
class StationRef:
    id: int
    code: str
    operator_id: int


# ---- passwords and leases ------------------------------------------------------------------


def set_password(session: Session, station_code: str) -> str:
    """Creates or replaces the station's OCPP password; returns it (it is stored hashed only).
    OCPP's BasicAuthPassword is 16 to 40 characters: this is 32."""
    station = session.scalar(select(Station).where(Station.code == station_code))
    if station is None:
        raise LookupError(f"no station {station_code!r}")
    password = secrets.token_urlsafe(24)
    statement = insert(OcppCredential).values(
        station_id=station.id, password_hash=hash_password(password)
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[OcppCredential.station_id],
            set_={"password_hash": statement.excluded.password_hash, "created_at": func.now()},
        )
    )
    return password


def authenticate(session: Session, station_code: str, password: str) -> StationRef | None:
    row = session.execute(
        select(Station.id, Station.code, Station.operator_id, OcppCredential.password_hash)
        .join(OcppCredential, OcppCredential.station_id == Station.id)
        .where(Station.code == station_code)
    ).one_or_none()
    if row is None or not verify_password(password, row.password_hash):
        return None
    return StationRef(row.id, row.code, row.operator_id)


def has_credential(session: Session, station_code: str) -> bool:
    return (
        session.scalar(
            select(OcppCredential.station_id)
            .join(Station, Station.id == OcppCredential.station_id)
            .where(Station.code == station_code)
        )
        is not None
    )


def acquire_lease(session: Session, station_id: int, instance_id: str, lease_s: float) -> bool:
    """True if this instance now holds the station's connection: nobody held it, or the
    holder's lease ran out (its gateway died without releasing it)."""
    now = utcnow()
    statement = insert(OcppConnection).values(
        station_id=station_id,
        instance_id=instance_id,
        connected_at=now,
        lease_expires_at=now + timedelta(seconds=lease_s),
    )
    taken = session.execute(
        statement.on_conflict_do_update(
            index_elements=[OcppConnection.station_id],
            set_={
                "instance_id": statement.excluded.instance_id,
                "connected_at": statement.excluded.connected_at,
                "lease_expires_at": statement.excluded.lease_expires_at,
            },
            where=OcppConnection.lease_expires_at < now,
        ).returning(OcppConnection.station_id)
    ).first()
    return taken is not None


def release_lease(session: Session, station_id: int, instance_id: str) -> None:
    session.execute(
        delete(OcppConnection).where(
            OcppConnection.station_id == station_id, OcppConnection.instance_id == instance_id
        )
    )


def renew_leases(session: Session, instance_id: str, lease_s: float) -> None:
    # One statement per gateway process and period, whatever the number of its stations.
    session.execute(
        update(OcppConnection)
        .where(OcppConnection.instance_id == instance_id)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    )


# ---- online state and slots ------------------------------------------------------------------


def set_online(session: Session, station_id: int, *, online: bool, seen: datetime) -> None:
    """The state the MQTT status topic sets (app/ingest/derived.py update_stations), with its
    rule: a report older than the one stored changes nothing."""
    session.execute(
        update(Station)
        .where(
            Station.id == station_id,
            (Station.last_seen_at.is_(None)) | (Station.last_seen_at <= seen),
        )
        .values(online=online, last_seen_at=seen)
    )


def mark_seen(session: Session, seen: Mapping[int, datetime]) -> None:
    """set_online(online=True) for many stations in one statement (the gateway batches
    heartbeats), with the same rule."""
    ids = list(seen)
    session.connection().exec_driver_sql(
        "UPDATE stations s SET online = true, last_seen_at = v.seen"
        " FROM unnest(%s::int8[], %s::timestamptz[]) AS v(id, seen)"
        " WHERE s.id = v.id AND (s.last_seen_at IS NULL OR s.last_seen_at <= v.seen)",
        (ids, [seen[i] for i in ids]),
    )


def set_connector_status(
    session: Session, station_id: int, evse_id: int, status: str, at: datetime
) -> bool:
    """False when the station has no slot with that number (evseId is the slot number)."""
    slot = _slot(session, station_id, evse_id)
    if slot is None:
        return False
    if slot.connector_status_at is None or slot.connector_status_at <= at:
        slot.connector_status = status
        slot.connector_status_at = at
    return True


@dataclass(frozen=True)
class SlotProblem:
    """A NotifyEvent report of the `Problem` variable of a component on a slot's EVSE."""

    evse_id: int
    code: str | None  # None: cleared
    info: str | None
    at: datetime


def report_problem(session: Session, station_id: int, problem: SlotProblem) -> bool:
    """The slot's open problem, raised or cleared; a report older than the one stored changes
    nothing. False when the station has no slot with that number."""
    slot = _slot(session, station_id, problem.evse_id)
    if slot is None:
        return False
    if slot.fault_at is None or slot.fault_at <= problem.at:
        slot.fault_code = problem.code
        slot.fault_info = problem.info if problem.code is not None else None
        slot.fault_at = problem.at
    return True


# ---- idTokens ----------------------------------------------------------------------------------


def register_id_token(session: Session, id_token: str, vin: str) -> None:
    vehicle_id = session.scalar(select(Vehicle.id).where(Vehicle.vin == vin))
    if vehicle_id is None:
        raise LookupError(f"no vehicle {vin!r}")
    statement = insert(IdToken).values(id_token=id_token.lower(), vehicle_id=vehicle_id)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[IdToken.id_token], set_={"vehicle_id": vehicle_id}
        )
    )


def vehicle_for_token(session: Session, id_token: str) -> Vehicle | None:
    return session.scalar(
        select(Vehicle)
        .join(IdToken, IdToken.vehicle_id == Vehicle.id)
        .where(IdToken.id_token == id_token.lower())
    )


# ---- swaps -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatteryReport:
    """One entry of BatterySwap's batteryData."""

    evse_id: int
    serial: str
    soc_pct: float
    soh_pct: float


class SwapOutOfOrder(Exception):
    """BatteryOut or BatteryOutTimeout for a requestId without BatteryIn: answered with a
    CALLERROR, nothing recorded."""


@dataclass(frozen=True)
class SwapOutcomeReport:
    swap_id: uuid.UUID | None
    # completed, rejected, aborted; 'unrecorded' when no swap row could be written (an unknown
    # vehicle); 'repeated' for a resent event.
    outcome: str
    reason_code: str | None
    exceptions: tuple[str, ...]
    in_at: datetime | None = None


@dataclass(frozen=True)
class VehicleRef:
    id: int
    vin: str


@dataclass(frozen=True)
class OpenSwap:
    """An open swap's BatteryIn, locked, with the vehicle its idToken names (None: none)."""

    request_id: int
    id_token: str
    in_serial: str
    in_evse_id: int
    in_soc_pct: float
    in_soh_pct: float
    in_at: datetime
    vehicle: VehicleRef | None


def battery_in(
    session: Session,
    station: StationRef,
    request_id: int,
    id_token: str,
    battery: BatteryReport,
    at: datetime | None = None,
) -> None:
    """Opens the swap. A resent BatteryIn (the station did not get our answer) changes
    nothing."""
    statement = insert(OcppSwap).values(
        station_id=station.id,
        request_id=request_id,
        id_token=id_token.lower(),
        state="open",
        in_serial=battery.serial,
        in_evse_id=battery.evse_id,
        in_soc_pct=battery.soc_pct,
        in_soh_pct=battery.soh_pct,
        in_at=at or utcnow(),
    )
    # A requestId seen before and closed is a new swap once more (stations reuse ids).
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[OcppSwap.station_id, OcppSwap.request_id],
            set_={
                c: statement.excluded[c]
                for c in (
                    "id_token",
                    "state",
                    "in_serial",
                    "in_evse_id",
                    "in_soc_pct",
                    "in_soh_pct",
                    "in_at",
                )
            }
            | {"swap_id": None},
            where=OcppSwap.state != "open",
        )
    )


def battery_out(
    session: Session,
    station: StationRef,
    request_id: int,
    battery: BatteryReport,
    at: datetime | None = None,
) -> SwapOutcomeReport:
    """Closes the swap through the swap service. What the rules refuse is recorded as they
    decide (a rejected swap with its reason) and custody follows the station anyway, with a
    custody exception; see docs/ocpp.md, Custody exceptions."""
    opened = _open_swap(session, station, request_id)
    if opened is None:
        return _repeated(session, station, request_id)
    now = at or utcnow()
    vehicle = opened.vehicle
    exceptions: list[str] = []
    swap: SwapRead | None = None
    if vehicle is None:
        exceptions.append(
            _flag(
                session,
                station,
                "IdTokenUnknown",
                f"swap {request_id}: idToken {opened.id_token!r} identifies no vehicle; battery "
                f"{battery.serial} was handed out to it",
                request_id=request_id,
                serial=battery.serial,
            )
        )
    else:
        swap = _record(session, station, vehicle, opened, battery, now)
        if swap is not None and swap.reason_code is not None:
            exceptions.append(
                _flag(
                    session,
                    station,
                    swap.reason_code,
                    f"the station swapped anyway: {swap.detail}",
                    swap_id=swap.id,
                    request_id=request_id,
                    serial=battery.serial,
                )
            )
    swap_id = swap.id if swap is not None else None
    exceptions += _follow_station(
        session,
        station,
        vehicle,
        removed=(opened.in_serial, opened.in_evse_id),
        installed=(battery.serial, battery.evse_id),
        swap_id=swap_id,
        request_id=request_id,
        at=now,
    )
    _close(session, station, request_id, "completed", swap_id)
    return SwapOutcomeReport(
        swap_id,
        swap.outcome.value if swap else "unrecorded",
        swap.reason_code if swap else None,
        tuple(exceptions),
        opened.in_at,
    )


def battery_out_timeout(
    session: Session, station: StationRef, request_id: int, at: datetime | None = None
) -> SwapOutcomeReport:
    """No battery was taken out in time: the swap ends as aborted. The battery the vehicle
    brought stays in the slot the station reported for BatteryIn."""
    opened = _open_swap(session, station, request_id)
    if opened is None:
        return _repeated(session, station, request_id)
    now = at or utcnow()
    vehicle = opened.vehicle
    removed = custody.lock_battery(session, opened.in_serial)
    swap_id = None
    if vehicle is not None:
        event = SwapEvent(
            station_id=station.id,
            vehicle_id=vehicle.id,
            vin=vehicle.vin,
            removed_battery_id=removed.id if removed else None,
            removed_battery_serial=opened.in_serial,
            removed_soc_pct=opened.in_soc_pct,
            removed_soh_pct=opened.in_soh_pct,
            removed_to_slot_id=_slot_id(session, station.id, opened.in_evse_id),
            started_at=opened.in_at,
            finished_at=max(now, opened.in_at),
            outcome=SwapOutcome.aborted,
            reason_code="BatteryOutTimeout",
            detail=f"station {station.code} reported no battery taken out (requestId {request_id})",
        )
        session.add(event)
        session.flush()
        swap_id = event.id
    exceptions = _follow_station(
        session,
        station,
        vehicle,
        removed=(opened.in_serial, opened.in_evse_id),
        installed=None,
        swap_id=swap_id,
        request_id=request_id,
        at=now,
    )
    _close(session, station, request_id, "aborted", swap_id)
    return SwapOutcomeReport(
        swap_id, "aborted", "BatteryOutTimeout", tuple(exceptions), opened.in_at
    )


def _open_swap(session: Session, station: StationRef, request_id: int) -> OpenSwap | None:
    """The swap to close, locked, and its vehicle in the same statement; None when it is
    already closed (a resent BatteryOut). Rows, not ORM objects: BatteryOut runs 50 times a
    second at a large network, and loading entities cost more CPU than the swap's SQL."""
    row = session.execute(
        select(
            OcppSwap.state,
            OcppSwap.id_token,
            OcppSwap.in_serial,
            OcppSwap.in_evse_id,
            OcppSwap.in_soc_pct,
            OcppSwap.in_soh_pct,
            OcppSwap.in_at,
            Vehicle.id.label("vehicle_id"),
            Vehicle.vin,
        )
        .outerjoin(IdToken, IdToken.id_token == OcppSwap.id_token)
        .outerjoin(Vehicle, Vehicle.id == IdToken.vehicle_id)
        .where(OcppSwap.station_id == station.id, OcppSwap.request_id == request_id)
        .with_for_update(of=OcppSwap)
    ).one_or_none()
    if row is None:
        raise SwapOutOfOrder(f"requestId {request_id} has no BatteryIn")
    if row.state != "open":
        return None
    return OpenSwap(
        request_id=request_id,
        id_token=row.id_token,
        in_serial=row.in_serial,
        in_evse_id=row.in_evse_id,
        in_soc_pct=row.in_soc_pct,
        in_soh_pct=row.in_soh_pct,
        in_at=row.in_at,
        vehicle=VehicleRef(row.vehicle_id, row.vin) if row.vehicle_id is not None else None,
    )


def _close(
    session: Session, station: StationRef, request_id: int, state: str, swap_id: uuid.UUID | None
) -> None:
    session.execute(
        update(OcppSwap)
        .where(OcppSwap.station_id == station.id, OcppSwap.request_id == request_id)
        .values(state=state, swap_id=swap_id)
    )


def _repeated(session: Session, station: StationRef, request_id: int) -> SwapOutcomeReport:
    swap = session.scalar(
        select(OcppSwap).where(OcppSwap.station_id == station.id, OcppSwap.request_id == request_id)
    )
    assert swap is not None
    return SwapOutcomeReport(swap.swap_id, "repeated", None, ())


def _record(
    session: Session,
    station: StationRef,
    vehicle: VehicleRef,
    opened: OpenSwap,
    battery: BatteryReport,
    now: datetime,
) -> SwapRead | None:
    try:
        request = SwapCreate(
            station_code=station.code,
            vin=vehicle.vin,
            removed_battery_serial=opened.in_serial,
            removed_soc_pct=opened.in_soc_pct,
            removed_soh_pct=opened.in_soh_pct,
            installed_battery_serial=battery.serial,
            installed_soc_pct=battery.soc_pct,
            installed_soh_pct=battery.soh_pct,
            started_at=opened.in_at,
            finished_at=max(now, opened.in_at),
        )
    except ValidationError:
        # A serial the API would refuse (too long, spaces): no battery of ours has it.
        _flag(
            session,
            station,
            "BatteryUnknown",
            f"swap {opened.request_id}: serials {opened.in_serial!r} / {battery.serial!r} "
            "are not valid swapfleet serials",
            request_id=opened.request_id,
        )
        return None
    # The swap service is async (POST /v1/swaps awaits it on psycopg's pool); here it runs on
    # this unit of work's connection, which answers at once, in the gateway's worker thread.
    return _run_to_end(
        swap_service.record_station_swap(
            SessionStatements(session),
            request,
            operator_id=station.operator_id,
            removed_to_slot=opened.in_evse_id,
        )
    )


def _run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """A coroutine that never suspends (its statements go through SessionStatements, which
    answer at once), run without an event loop: asyncio.run would make and close one per
    swap, which cost more than the rest of BatteryOut's Python under load."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise RuntimeError("the swap service awaited real I/O: run it on an event loop")


def _follow_station(
    session: Session,
    station: StationRef,
    vehicle: VehicleRef | None,
    *,
    removed: tuple[str, int],
    installed: tuple[str, int] | None,
    swap_id: uuid.UUID | None,
    request_id: int,
    at: datetime,
) -> list[str]:
    """Custody as the station reported it: the battery that came in sits in its BatteryIn
    slot, the battery that went out is in the vehicle. Nothing moves where the records
    already agree (the swap service moved it); a battery the records put where another one now
    is goes in transit, flagged."""
    # Both batteries locked in one statement, in serial order, the order of the swap function
    # and the ingest (migration b7e2c9d4a1f3): the swap's rules may not have locked them (a
    # station not active, an unknown idToken), and one by one, the battery going out first,
    # they could deadlock with an ingest batch holding the other. With them, where the records
    # hold them: usually where the station says, the swap service having moved them, and then
    # nothing more is loaded or moved.
    serials = [removed[0]] if installed is None else [removed[0], installed[0]]
    in_slot_id = (
        select(Slot.id)
        .where(Slot.station_id == station.id, Slot.number == removed[1])
        .scalar_subquery()
    )
    places = {
        row.serial: row
        for row in session.execute(
            select(Battery.serial, Battery.slot_id, Battery.vehicle_id, in_slot_id.label("in_slot"))
            .where(Battery.serial.in_(serials))
            .order_by(Battery.serial)
            .with_for_update(of=Battery)
        )
    }
    came_in = places.get(removed[0])
    went_out = places.get(installed[0]) if installed else None
    # The conditions of the moves below, none holding.
    if (came_in is None or came_in.in_slot is None or came_in.slot_id == came_in.in_slot) and (
        went_out is None or (vehicle is not None and went_out.vehicle_id == vehicle.id)
    ):
        return []
    flagged: list[str] = []
    note = f"OCPP swap {request_id} at {station.code}"
    # As entities to move (their locks are held since the statement above).
    locked = custody.lock_batteries(session, serials)
    out_battery = locked.get(installed[0]) if installed else None
    in_battery = locked.get(removed[0])
    in_slot = came_in.in_slot if came_in is not None else None
    if out_battery is not None and (vehicle is None or out_battery.vehicle_id != vehicle.id):
        # Out of its slot first, so that the slot is free if the station reused it.
        custody.relocate(
            session,
            out_battery,
            kind=LocationKind.in_transit,
            cause=CustodyCause.swap,
            note=note,
            swap_id=swap_id,
            at=at,
        )
    if in_battery is not None and in_slot is not None and in_battery.slot_id != in_slot:
        flagged += _displace(session, station, slot_id=in_slot, keep=in_battery, note=note, at=at)
        custody.relocate(
            session,
            in_battery,
            kind=LocationKind.slot,
            slot_id=in_slot,
            cause=CustodyCause.swap,
            swap_id=swap_id,
            at=at,
        )
    if out_battery is not None and vehicle is not None and out_battery.vehicle_id != vehicle.id:
        flagged += _displace(
            session, station, vehicle_id=vehicle.id, keep=out_battery, note=note, at=at
        )
        custody.relocate(
            session,
            out_battery,
            kind=LocationKind.vehicle,
            vehicle_id=vehicle.id,
            cause=CustodyCause.swap,
            swap_id=swap_id,
            at=at,
        )
    return flagged


def _displace(
    session: Session,
    station: StationRef,
    *,
    keep: Battery,
    note: str,
    at: datetime,
    slot_id: int | None = None,
    vehicle_id: int | None = None,
) -> list[str]:
    """A battery the records hold where the station just put another one: in transit, and an
    exception, since the records and the station disagree on it."""
    where = Battery.slot_id == slot_id if slot_id is not None else Battery.vehicle_id == vehicle_id
    occupant = session.scalar(select(Battery).where(where, Battery.id != keep.id).with_for_update())
    if occupant is None:
        return []
    place = "slot" if slot_id is not None else "vehicle"
    code = "SlotOccupied" if slot_id is not None else "VehicleOccupied"
    custody.relocate(
        session,
        occupant,
        kind=LocationKind.in_transit,
        cause=CustodyCause.swap,
        note=f"{note}: displaced by {keep.serial}",
        at=at,
    )
    return [
        _flag(
            session,
            station,
            code,
            f"{note}: the records held battery {occupant.serial} in the {place} the station put "
            f"{keep.serial} in; {occupant.serial} is now in transit",
            serial=occupant.serial,
        )
    ]


def _slot(session: Session, station_id: int, number: int) -> Slot | None:
    return session.scalar(select(Slot).where(Slot.station_id == station_id, Slot.number == number))


def _slot_id(session: Session, station_id: int, number: int) -> int | None:
    return session.scalar(
        select(Slot.id).where(Slot.station_id == station_id, Slot.number == number)
    )


def _flag(
    session: Session,
    station: StationRef,
    reason_code: str,
    detail: str,
    *,
    swap_id: uuid.UUID | None = None,
    request_id: int | None = None,
    serial: str | None = None,
) -> str:
    session.add(
        CustodyException(
            station_id=station.id,
            at=utcnow(),
            reason_code=reason_code,
            detail=detail,
            swap_id=swap_id,
            request_id=request_id,
            battery_serial=serial,
        )
    )
    session.flush()
    return reason_code


# ---- RequestBatterySwap -------------------------------------------------------------------------

# Every gateway process LISTENs on this channel; a new request NOTIFYs its station's id, and
# the process holding that station's connection sends it (app/ocpp/gateway.py).
SWAP_REQUEST_CHANNEL = "ocpp_swap_requests"


class VehicleHasNoIdToken(Exception):
    pass


def create_swap_request(session: Session, station_id: int, vin: str) -> OcppSwapRequest:
    """A pending request, announced to the gateways when the transaction commits (NOTIFY is
    delivered at commit, never for a rolled-back request)."""
    vehicle_id = session.scalar(select(Vehicle.id).where(Vehicle.vin == vin))
    if vehicle_id is None:
        raise LookupError(f"no vehicle {vin!r}")
    token = session.scalar(
        select(IdToken.id_token)
        .where(IdToken.vehicle_id == vehicle_id)
        .order_by(IdToken.created_at, IdToken.id_token)
        .limit(1)
    )
    if token is None:
        raise VehicleHasNoIdToken(f"vehicle {vin} has no idToken (PUT /v1/id-tokens/{{token}})")
    request = OcppSwapRequest(station_id=station_id, id_token=token, vin=vin, state="pending")
    session.add(request)
    session.flush()
    session.execute(select(func.pg_notify(SWAP_REQUEST_CHANNEL, str(station_id))))
    return request


def claim_swap_requests(session: Session, station_id: int) -> list[tuple[int, str]]:
    """The station's pending requests, marked sent: (requestId, idToken) each.

    Only the station's one connection claims, and only when none of its requests is in
    flight: a request still `sent` then was sent by a gateway that stopped before storing
    the answer. Sending it again could start a second swap, so it is marked failed."""
    session.execute(
        update(OcppSwapRequest)
        .where(OcppSwapRequest.station_id == station_id, OcppSwapRequest.state == "sent")
        .values(
            state="failed",
            status_info="the gateway that sent it stopped before the station's answer",
            answered_at=utcnow(),
        )
    )
    rows = session.execute(
        update(OcppSwapRequest)
        .where(OcppSwapRequest.station_id == station_id, OcppSwapRequest.state == "pending")
        .values(state="sent")
        .returning(OcppSwapRequest.request_id, OcppSwapRequest.id_token)
    ).all()
    return [(row.request_id, row.id_token) for row in sorted(rows)]


def answer_swap_request(session: Session, *, request_id: int, state: str, info: str | None) -> None:
    session.execute(
        update(OcppSwapRequest)
        .where(OcppSwapRequest.request_id == request_id, OcppSwapRequest.state == "sent")
        .values(state=state, status_info=info, answered_at=utcnow())
    )


def swap_of_request(session: Session, station_id: int, request_id: int) -> uuid.UUID | None:
    """The swap the station made for the request, once BatteryOut (or its timeout) closed it."""
    return session.scalar(
        select(OcppSwap.swap_id).where(
            OcppSwap.station_id == station_id, OcppSwap.request_id == request_id
        )
    )


# ---- commands: ChangeAvailability, SetVariables ---------------------------------------------


def queue_availability_change(
    session: Session, station_id: int, slot_number: int, operative: bool
) -> None:
    """A slot enabled or disabled through REST."""
    queue_command(
        session,
        station_id,
        "ChangeAvailability",
        {
            "operationalStatus": "Operative" if operative else "Inoperative",
            "evse": {"id": slot_number},
        },
    )


def queue_target_soc(session: Session, station_id: int, target_soc_pct: float) -> None:
    """The station's target SoC changed through REST: the station's swap controller hands
    out batteries at or above it (OCPP 2.1 device model, BatterySwapCtrlr.TargetSoc)."""
    queue_command(
        session,
        station_id,
        "SetVariables",
        {
            "setVariableData": [
                {
                    "component": {"name": "BatterySwapCtrlr"},
                    "variable": {"name": "TargetSoc"},
                    "attributeValue": f"{target_soc_pct:g}",
                }
            ]
        },
    )


def queue_command(session: Session, station_id: int, action: str, payload: dict[str, Any]) -> None:
    """For a station that speaks OCPP (has a password), sent by the gateway holding it: the
    same path as a swap request (NOTIFY at commit). Other stations get nothing."""
    if session.get(OcppCredential, station_id) is None:
        return
    session.add(OcppCommand(station_id=station_id, action=action, payload=payload, state="pending"))
    session.flush()
    session.execute(select(func.pg_notify(SWAP_REQUEST_CHANNEL, str(station_id))))


def claim_commands(session: Session, station_id: int) -> list[tuple[int, str, dict[str, Any]]]:
    """The station's pending commands, marked sent, oldest first: (id, action, payload). As
    for swap requests, one still `sent` was left by a gateway that stopped: failed."""
    session.execute(
        update(OcppCommand)
        .where(OcppCommand.station_id == station_id, OcppCommand.state == "sent")
        .values(
            state="failed",
            status_info="the gateway that sent it stopped before the station's answer",
            answered_at=utcnow(),
        )
    )
    rows = session.execute(
        update(OcppCommand)
        .where(OcppCommand.station_id == station_id, OcppCommand.state == "pending")
        .values(state="sent")
        .returning(OcppCommand.id, OcppCommand.action, OcppCommand.payload)
    ).all()
    return sorted(((row.id, row.action, row.payload) for row in rows), key=lambda r: r[0])


def answer_command(session: Session, *, command_id: int, state: str, info: str | None) -> None:
    session.execute(
        update(OcppCommand)
        .where(OcppCommand.id == command_id, OcppCommand.state == "sent")
        .values(state=state, status_info=info, answered_at=utcnow())
    )
