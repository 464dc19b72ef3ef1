"""The OCPP gateway's BatterySwap and the ingest take battery locks in one order: real
concurrent transactions on committed data, driven step by step."""

from collections.abc import Iterator
from types import SimpleNamespace

import psycopg
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from app.ingest.writer import Accepted, lock_batteries
from app.models import Battery, Slot, StationStatus
from app.ocpp import service as ocpp_service
from app.ocpp.service import BatteryReport, StationRef
from devices.contract import RecordKind
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.committed import truncate_all
from tests.fixtures.factories import unique
from tests.fixtures.lock_steps import Step, backend_pid, someone_waits_for, wait_until
from tests.fixtures.swap_world import SwapWorld, build_swap_world


@pytest.fixture
def committed_world(engine: Engine) -> Iterator[tuple[SwapWorld, str]]:
    """A station with one charged battery in slot 1, a vehicle with its idToken, committed;
    the serials sort the vehicle's battery first, the opposite of the order BatterySwap's
    custody step takes them in (the battery going out, then the one coming in)."""
    with Session(engine, expire_on_commit=False) as session:
        world = build_swap_world(session)
        for battery, prefix in ((world.depleted, "A-"), (world.charged[0], "Z-")):
            battery.serial = prefix + battery.serial
        token = unique("RFID")
        ocpp_service.register_id_token(session, token, world.vehicle.vin)
        session.commit()
    yield world, token
    truncate_all(engine)


def ingest_batch_locks(serials: list[str]) -> str:
    """The ingest writer's battery locks for a batch of charging records of these batteries,
    in a transaction of their own, committed."""
    accepted = Accepted()
    accepted.rows[RecordKind.charging] = [SimpleNamespace(battery_serial=s) for s in serials]
    with psycopg.connect(TEST_DATABASE_URL) as conn:
        conn.execute("SET lock_timeout = '10s'")
        lock_batteries(conn, accepted)
    return "locked"


@pytest.mark.parametrize(
    ("case", "outcome"),
    [
        ("swap", "completed"),
        # The swap's rules refuse before they lock a battery, or never run: custody follows
        # the station all the same.
        ("station_in_maintenance", "rejected"),
        ("unknown_id_token", "unrecorded"),
    ],
)
def test_battery_swap_and_the_ingest_take_battery_locks_in_one_order(
    committed_world: tuple[SwapWorld, str], engine: Engine, case: str, outcome: str
) -> None:
    world, token = committed_world
    removed, installed = world.depleted.serial, world.charged[0].serial
    station = StationRef(world.station.id, world.station.code, world.operator.id)
    if case == "station_in_maintenance":
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE stations SET status = :s WHERE id = :id"),
                {"s": StationStatus.maintenance.value, "id": station.id},
            )
    with Session(engine) as gateway, Session(engine) as holder:
        ocpp_service.battery_in(
            gateway,
            station,
            7,
            token if case != "unknown_id_token" else "unknown-token",
            BatteryReport(evse_id=2, serial=removed, soc_pct=12.0, soh_pct=95.0),
        )
        gateway.commit()
        gateway_pid = backend_pid(gateway)  # BatterySwap's transaction, from here on
        # A key-share lock on the removed battery (as a row referencing it takes) holds up
        # BatterySwap's lock on it, but not the ingest's weaker one.
        holder.execute(
            text("SELECT 1 FROM batteries WHERE serial = :s FOR KEY SHARE"), {"s": removed}
        )

        def battery_out() -> str:
            try:
                report = ocpp_service.battery_out(
                    gateway,
                    station,
                    7,
                    BatteryReport(evse_id=1, serial=installed, soc_pct=95.0, soh_pct=97.0),
                )
            except Exception:
                gateway.rollback()
                raise
            gateway.commit()
            return report.outcome

        # BatterySwap waits for the removed battery (holding the installed one, on the old
        # order) ...
        swap = Step(battery_out)
        wait_until(lambda: someone_waits_for(engine, backend_pid(holder)))
        # ... the ingest locks the removed battery, then wants the installed one ...
        ingest = Step(lambda: ingest_batch_locks(sorted([removed, installed])))
        wait_until(lambda: ingest.done() or someone_waits_for(engine, gateway_pid))
        # ... and BatterySwap, let go on, wants the removed battery the ingest holds.
        holder.rollback()
        assert ingest.result() == "locked"
        assert swap.result() == outcome
    # Custody follows the station: the installed battery is in the vehicle (in transit when
    # no vehicle is known), the removed one in the slot of BatteryIn.
    with Session(engine) as session:
        places = {
            serial: (vehicle_id, slot_number)
            for serial, vehicle_id, slot_number in session.execute(
                select(Battery.serial, Battery.vehicle_id, Slot.number)
                .outerjoin(Slot, Slot.id == Battery.slot_id)
                .where(Battery.serial.in_([removed, installed]))
            )
        }
    carrier = world.vehicle.id if case != "unknown_id_token" else None
    assert places == {installed: (carrier, None), removed: (None, 2)}
