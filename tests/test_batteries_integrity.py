"""The database itself keeps a battery in one place, whatever code writes to it, and the
service turns a lost race on a slot into a 409 rather than a 500."""

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from app.core.errors import AppError
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.auth.service import Principal, create_key
from app.batteries import service as battery_service
from app.batteries.exceptions import SlotOccupied
from app.batteries.schemas import SlotPlace
from app.models import (
    ApiKey,
    Battery,
    BatteryState,
    KeyRole,
    LocationKind,
    Organization,
    OrgRole,
    PackType,
    Station,
)
from tests.fixtures.factories import (
    make_battery,
    make_org,
    make_pack_type,
    make_station,
    make_vehicle,
    make_vehicle_model,
    slot_of,
)


def constraint_of(error: IntegrityError) -> str | None:
    return getattr(getattr(error.orig, "diag", None), "constraint_name", None)


def test_database_refuses_battery_in_a_slot_and_a_vehicle_at_once(session: Session) -> None:
    operator = make_org(session, OrgRole.operator)
    oem = make_org(session, OrgRole.oem)
    pack = make_pack_type(session)
    vehicle = make_vehicle(session, make_vehicle_model(session, oem, pack))
    slot = slot_of(session, make_station(session, operator), 1)
    battery = make_battery(session, pack, make_org(session, OrgRole.owner), slot=slot)

    # Raw SQL, bypassing custody.py and the service entirely.
    with pytest.raises(IntegrityError) as raised, session.begin_nested():
        session.execute(
            text("UPDATE batteries SET vehicle_id = :v WHERE id = :b"),
            {"v": vehicle.id, "b": battery.id},
        )
    assert constraint_of(raised.value) == "ck_batteries_one_location"

    # The ORM is refused the same way, also for a warehouse battery that names a slot.
    stray = Battery(
        serial="TWO-PLACES-1",
        pack_type_id=pack.id,
        owner_id=battery.owner_id,
        location_kind=LocationKind.warehouse,
        slot_id=slot_of(session, make_station(session, operator), 1).id,
    )
    savepoint = session.begin_nested()
    session.add(stray)
    with pytest.raises(IntegrityError) as raised:
        session.flush()
    savepoint.rollback()
    assert constraint_of(raised.value) == "ck_batteries_one_location"


def test_database_refuses_two_batteries_in_one_slot(session: Session) -> None:
    pack = make_pack_type(session)
    owner = make_org(session, OrgRole.owner)
    slot = slot_of(session, make_station(session, make_org(session)), 2)
    make_battery(session, pack, owner, slot=slot)
    other = make_battery(session, pack, owner)

    with pytest.raises(IntegrityError) as raised, session.begin_nested():
        session.execute(
            text("UPDATE batteries SET location_kind = 'slot', slot_id = :s WHERE id = :b"),
            {"s": slot.id, "b": other.id},
        )
    assert constraint_of(raised.value) == "uq_batteries_slot_id"


def test_database_refuses_two_batteries_in_one_vehicle(session: Session) -> None:
    oem = make_org(session, OrgRole.oem)
    pack = make_pack_type(session)
    owner = make_org(session, OrgRole.owner)
    vehicle = make_vehicle(session, make_vehicle_model(session, oem, pack))
    make_battery(session, pack, owner, vehicle=vehicle)
    with pytest.raises(IntegrityError) as raised, session.begin_nested():
        make_battery(session, pack, owner, vehicle=vehicle)
    assert constraint_of(raised.value) == "uq_batteries_vehicle_id"


def test_database_refuses_a_retired_battery_in_a_slot(session: Session) -> None:
    pack = make_pack_type(session)
    slot = slot_of(session, make_station(session, make_org(session)), 1)
    with pytest.raises(IntegrityError) as raised, session.begin_nested():
        make_battery(
            session, pack, make_org(session, OrgRole.owner), slot=slot, state=BatteryState.retired
        )
    assert constraint_of(raised.value) == "ck_batteries_retired_not_in_use"


@dataclass
class Committed:
    station_code: str
    serials: tuple[str, str]
    principal: Principal


@pytest.fixture
def committed(engine: Engine) -> Iterator[Committed]:
    """Rows committed for real, so that two connections can race; removed afterwards."""
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory.begin() as s:
        operator = make_org(s, OrgRole.operator)
        owner = make_org(s, OrgRole.owner)
        pack = make_pack_type(s)
        station = make_station(s, operator, slots=1)
        first = make_battery(s, pack, owner)
        second = make_battery(s, pack, owner)
        key, _ = create_key(s, role=KeyRole.admin, organization_code=None)
        ids = (operator.id, owner.id, pack.id, station.id, key.id)
        principal = Principal(
            api_key_id=key.id, role=KeyRole.admin, organization_id=None, organization_code=None
        )
    try:
        yield Committed(station.code, (first.serial, second.serial), principal)
    finally:
        operator_id, owner_id, pack_id, station_id, key_id = ids
        with factory.begin() as s:
            # Custody events go with their batteries (ON DELETE CASCADE), slots with the station.
            s.execute(delete(Battery).where(Battery.pack_type_id == pack_id))
            s.execute(delete(Station).where(Station.id == station_id))
            s.execute(delete(ApiKey).where(ApiKey.id == key_id))
            s.execute(delete(Organization).where(Organization.id.in_([operator_id, owner_id])))
            s.execute(delete(PackType).where(PackType.id == pack_id))


def wait_for_lock_waiter(engine: Engine, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            conn.rollback()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the second move never waited on the first one's slot")


def test_racing_moves_into_one_slot_give_the_loser_slot_occupied(
    engine: Engine, committed: Committed
) -> None:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    place = SlotPlace(kind="slot", station_code=committed.station_code, slot_number=1)
    first_serial, second_serial = committed.serials
    outcome: dict[str, object] = {}

    def second_move() -> None:
        try:
            with factory.begin() as s:
                battery_service.move_battery(s, committed.principal, second_serial, place)
            outcome["result"] = "moved"
        except AppError as exc:
            outcome["result"] = exc
        except Exception as exc:  # anything else is what this test exists to catch
            outcome["result"] = exc

    with factory() as first, first.begin():
        battery_service.move_battery(first, committed.principal, first_serial, place)
        # The first move holds the slot uncommitted; the second passes the service's
        # emptiness check (it cannot see uncommitted rows) and blocks on the unique index.
        racer = threading.Thread(target=second_move)
        racer.start()
        wait_for_lock_waiter(engine)
    racer.join(timeout=30)
    assert not racer.is_alive()

    assert isinstance(outcome["result"], SlotOccupied), outcome["result"]
    with factory() as s:
        holders = s.scalars(
            select(Battery.serial)
            .where(Battery.location_kind == LocationKind.slot)
            .where(Battery.serial.in_(committed.serials))
        ).all()
    assert holders == [first_serial]
