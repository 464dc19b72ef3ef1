"""Real concurrent transactions against committed data: no shared test transaction here."""

import asyncio
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.service import authenticate
from app.batteries import custody
from app.batteries import service as battery_service
from app.batteries.schemas import WarehousePlace
from app.core.config import get_settings
from app.core.db import SessionStatements, get_engine, get_session_factory
from app.main import create_app
from app.models import (
    Battery,
    CustodyCause,
    LocationKind,
    SwapEvent,
    SwapOutcome,
    Vehicle,
    VehicleModel,
)
from app.swaps import service
from app.swaps.schemas import SwapCreate, SwapRead
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.api_server import running_api
from tests.fixtures.committed import truncate_all
from tests.fixtures.factories import auth, make_battery, make_vehicle
from tests.fixtures.lock_steps import Step, backend_pid, someone_waits_for, wait_until
from tests.fixtures.swap_world import SwapWorld, build_swap_world


def run_together(calls: list[Callable[[], None]]) -> None:
    """Start every call on its own thread and wait for all: real concurrent transactions."""
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


@pytest.fixture
def committed_world(engine: Engine) -> Iterator[tuple[SwapWorld, list[tuple[str, str]]]]:
    """A station with 4 charged batteries and 7 vehicles waiting, all committed."""
    get_settings.cache_clear()
    get_engine.cache_clear()
    get_session_factory.cache_clear()
    with Session(engine, expire_on_commit=False) as session:
        world = build_swap_world(session, charged_socs=(95.0, 96.0, 97.0, 98.0), slots=8)
        model_id = world.vehicle.model_id
        model = session.get(VehicleModel, model_id)
        assert model is not None
        drivers = [(world.vehicle.vin, world.depleted.serial)]
        for _ in range(6):
            vehicle = make_vehicle(session, model)
            battery = make_battery(session, world.pack, world.owner, vehicle=vehicle, soc_pct=10.0)
            drivers.append((vehicle.vin, battery.serial))
        session.commit()
    yield world, drivers
    truncate_all(engine)


def assert_four_of_seven_got_the_four_batteries(
    world: SwapWorld, results: dict[str, tuple[int, dict[str, object]]]
) -> None:
    """Seven swaps raced for four charged batteries: four got one each, three were refused."""
    statuses = Counter(status for status, _ in results.values())
    assert statuses == {201: 4, 409: 3}, results
    installed = [
        str(body["installed_battery_serial"]) for status, body in results.values() if status == 201
    ]
    assert sorted(installed) == sorted(b.serial for b in world.charged)
    assert {body["code"] for status, body in results.values() if status == 409} == {
        "NoBatteryAvailable"
    }


def test_concurrent_swaps_at_one_station_never_share_a_battery(
    committed_world: tuple[SwapWorld, list[tuple[str, str]]], engine: Engine
) -> None:
    world, drivers = committed_world
    app = create_app()
    barrier = threading.Barrier(len(drivers))
    results: dict[str, tuple[int, dict[str, object]]] = {}

    def swap(vin: str, serial: str) -> None:
        with TestClient(app) as client:
            barrier.wait()
            response = client.post(
                "/v1/swaps",
                json={
                    "station_code": world.station.code,
                    "vin": vin,
                    "removed_battery_serial": serial,
                },
                headers=auth(world.operator_key),
            )
            results[vin] = (response.status_code, response.json())

    run_together([functools.partial(swap, *driver) for driver in drivers])

    assert_four_of_seven_got_the_four_batteries(world, results)
    with Session(engine) as session:
        # This world's vehicles only: other tests commit vehicles to the same database.
        vehicles_with_battery = session.scalars(
            select(Battery.vehicle_id)
            .join(Vehicle, Vehicle.id == Battery.vehicle_id)
            .where(
                Battery.location_kind == LocationKind.vehicle,
                Vehicle.vin.in_([vin for vin, _ in drivers]),
            )
        ).all()
        assert len(vehicles_with_battery) == len(set(vehicles_with_battery)) == 7
        assert (
            session.scalar(select(SwapEvent).where(SwapEvent.outcome == "completed").limit(1))
            is not None
        )


def test_allocation_passes_over_a_battery_another_swap_holds(
    committed_world: tuple[SwapWorld, list[tuple[str, str]]], engine: Engine
) -> None:
    """Two swaps at one station, the first still uncommitted: the second is given the next
    battery at once instead of waiting for the first one's."""
    world, drivers = committed_world
    with Session(engine) as first, Session(engine) as second:
        principal = authenticate(first, world.operator_key)

        def swap(session: Session, vin: str, serial: str) -> SwapRead:
            request = SwapCreate(
                station_code=world.station.code, vin=vin, removed_battery_serial=serial
            )
            return asyncio.run(service.record_swap(SessionStatements(session), principal, request))

        held = swap(first, *drivers[0])
        # Would block without SKIP LOCKED; a lock timeout turns that into a failure.
        second.execute(text("SET LOCAL lock_timeout = '2s'"))
        other = swap(second, *drivers[1])
        assert held.installed_battery_serial == world.charged[-1].serial
        assert other.outcome is SwapOutcome.completed
        assert other.installed_battery_serial == world.charged[-2].serial
        first.rollback()
        second.rollback()


def test_swap_naming_a_battery_just_handed_out_is_rejected(
    committed_world: tuple[SwapWorld, list[tuple[str, str]]], engine: Engine
) -> None:
    world, drivers = committed_world
    app = create_app()
    target = world.charged[0].serial
    barrier = threading.Barrier(2)
    statuses: list[tuple[int, str]] = []

    def swap(vin: str, serial: str) -> None:
        with TestClient(app) as client:
            barrier.wait()
            response = client.post(
                "/v1/swaps",
                json={
                    "station_code": world.station.code,
                    "vin": vin,
                    "removed_battery_serial": serial,
                    "installed_battery_serial": target,
                },
                headers=auth(world.operator_key),
            )
            statuses.append((response.status_code, response.json().get("code", "")))

    run_together([functools.partial(swap, *driver) for driver in drivers[:2]])
    assert sorted(statuses) == [(201, ""), (409, "BatteryNotAtStation")]


def test_concurrent_retries_with_one_idempotency_key_record_one_swap(
    committed_world: tuple[SwapWorld, list[tuple[str, str]]], engine: Engine
) -> None:
    world, drivers = committed_world
    app = create_app()
    vin, serial = drivers[0]
    barrier = threading.Barrier(4)
    bodies: list[dict[str, object]] = []

    def retry() -> None:
        with TestClient(app) as client:
            barrier.wait()
            response = client.post(
                "/v1/swaps",
                json={
                    "station_code": world.station.code,
                    "vin": vin,
                    "removed_battery_serial": serial,
                },
                headers={**auth(world.operator_key), "Idempotency-Key": "same-request"},
            )
            bodies.append(response.json())

    run_together([retry] * 4)
    assert len({str(b["id"]) for b in bodies}) == 1
    with Session(engine) as session:
        assert len(session.scalars(select(SwapEvent).where(SwapEvent.vin == vin)).all()) == 1


def test_database_refuses_two_batteries_in_one_vehicle(
    committed_world: tuple[SwapWorld, list[tuple[str, str]]], engine: Engine
) -> None:
    world, _ = committed_world
    with Session(engine) as session:
        battery = session.get(Battery, world.charged[0].id)
        assert battery is not None
        battery.slot_id = None
        battery.location_kind = LocationKind.vehicle
        battery.vehicle_id = world.vehicle.id
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()


def test_concurrent_swaps_through_a_server_with_two_workers_never_share_a_battery(
    committed_world: tuple[SwapWorld, list[tuple[str, str]]], engine: Engine, tmp_path: Path
) -> None:
    """The same race through a real `swapfleet api --workers 2`: the swaps are spread over
    two processes, each with its own connection pool, and SKIP LOCKED still decides."""
    world, drivers = committed_world
    results: dict[str, tuple[int, dict[str, object]]] = {}
    with running_api(
        TEST_DATABASE_URL, tmp_path / "api.log", "--workers", "2", startup_s=120
    ) as api:
        barrier = threading.Barrier(len(drivers))

        def swap(vin: str, serial: str) -> None:
            # One connection each: the kernel spreads them over both workers.
            with httpx.Client(base_url=api.base_url, timeout=30) as client:
                barrier.wait()
                response = client.post(
                    "/v1/swaps",
                    json={
                        "station_code": world.station.code,
                        "vin": vin,
                        "removed_battery_serial": serial,
                    },
                    headers=auth(world.operator_key),
                )
                results[vin] = (response.status_code, response.json())

        run_together([functools.partial(swap, *driver) for driver in drivers])

    assert_four_of_seven_got_the_four_batteries(world, results)
    with Session(engine) as session:
        completed = session.scalar(
            text(
                "SELECT count(*) FROM swap_events WHERE station_id = :s AND outcome = 'completed'"
            ),
            {"s": world.station.id},
        )
    assert completed == 4


def test_a_swap_naming_its_battery_and_the_ingest_take_battery_locks_in_one_order(
    committed_world: tuple[SwapWorld, list[tuple[str, str]]], engine: Engine
) -> None:
    """The ingest locks a batch's batteries by serial (app/ingest/writer.py lock_batteries),
    one row at a time. A swap that locked its removed battery and then waited for a named
    installed battery of a lower serial formed a cycle with such a batch holding the lower
    one: PostgreSQL aborted one of them as a deadlock (seen once in CI as a 503 from `up`)."""
    world, drivers = committed_world
    installed, removed = world.charged[0], world.depleted
    with engine.begin() as connection:
        # Serials whose order is the opposite of the swap's removed-then-installed order.
        for battery, prefix in ((installed, "A-"), (removed, "Z-")):
            connection.execute(
                text("UPDATE batteries SET serial = :prefix || serial WHERE id = :id"),
                {"prefix": prefix, "id": battery.id},
            )
    installed_serial, removed_serial = "A-" + installed.serial, "Z-" + removed.serial
    with Session(engine) as ingest, Session(engine) as swapping:
        principal = authenticate(swapping, world.operator_key)
        swapping.commit()
        lock = text("SELECT 1 FROM batteries WHERE serial = :serial FOR NO KEY UPDATE")
        # The batch's statement has taken its first (lowest) serial ...
        ingest.execute(lock, {"serial": installed_serial})
        ingest_pid = backend_pid(ingest)

        def swap() -> SwapOutcome:
            request = SwapCreate(
                station_code=world.station.code,
                vin=world.vehicle.vin,
                removed_battery_serial=removed_serial,
                installed_battery_serial=installed_serial,
            )
            try:
                result = asyncio.run(
                    service.record_swap(SessionStatements(swapping), principal, request)
                )
                swapping.commit()
            except Exception:  # the deadlock, on the old lock order
                swapping.rollback()
                raise
            return result.outcome

        swapped = Step(swap)
        wait_until(lambda: someone_waits_for(engine, ingest_pid))
        # ... and now takes the next one, which the swap must not be holding.
        ingest.execute(text("SET LOCAL lock_timeout = '5s'"))
        ingest.execute(lock, {"serial": removed_serial})
        ingest.commit()
        assert swapped.result() == SwapOutcome.completed


def test_two_station_swaps_naming_one_empty_slot_take_it_one_after_the_other(
    committed_world: tuple[SwapWorld, list[tuple[str, str]]], engine: Engine
) -> None:
    """A station's swap (OCPP) names the slot the removed battery went into. Two uncommitted
    swaps naming the same empty slot: the second waits for the first's lock on the slot, then
    sees the first's battery there and puts its own into the slot its charged one left,
    instead of failing on the unique index of batteries.slot_id."""
    world, drivers = committed_world
    with Session(engine) as first, Session(engine) as second:

        def swap(session: Session, vin: str, serial: str, installed: Battery) -> SwapRead:
            request = SwapCreate(
                station_code=world.station.code,
                vin=vin,
                removed_battery_serial=serial,
                installed_battery_serial=installed.serial,
            )
            return asyncio.run(
                service.record_station_swap(
                    SessionStatements(session),
                    request,
                    operator_id=world.station.operator_id,
                    removed_to_slot=6,
                )
            )

        held = swap(first, *drivers[0], world.charged[0])
        assert held.removed_to_slot_number == 6
        first_pid = backend_pid(first)

        def second_swap() -> SwapRead:
            try:
                result = swap(second, *drivers[1], world.charged[1])
                second.commit()
            except Exception:
                second.rollback()
                raise
            return result

        second_step = Step(second_swap)
        wait_until(lambda: someone_waits_for(engine, first_pid))
        first.commit()
        other = second_step.result()
    assert isinstance(other, SwapRead), other
    assert other.outcome is SwapOutcome.completed
    assert other.removed_to_slot_number == other.installed_from_slot_number == 2
    with Session(engine) as session:
        places = dict(
            session.execute(
                select(Battery.serial, Battery.slot_id).where(
                    Battery.serial.in_([drivers[0][1], drivers[1][1]])
                )
            ).all()
        )
    assert None not in places.values()
    assert len(set(places.values())) == 2


@pytest.mark.parametrize(
    ("change", "swap_ends"),
    [
        ("move_out", (SwapOutcome.rejected, "BatteryMismatch")),
        ("quarantine", (SwapOutcome.completed, None)),
    ],
)
def test_a_swap_and_a_custody_change_of_the_battery_in_its_vehicle_do_not_deadlock(
    committed_world: tuple[SwapWorld, list[tuple[str, str]]],
    engine: Engine,
    change: str,
    swap_ends: tuple[SwapOutcome, str | None],
) -> None:
    """A battery move or lifecycle change locks the battery, then writes its custody_events row,
    whose vehicle reference takes a key-share lock on the vehicle the battery is in. A swap
    locks that vehicle first, then the battery it removes: with the vehicle locked FOR UPDATE,
    which conflicts with a key-share lock, the two formed a cycle."""
    world, _ = committed_world
    removed = world.depleted.serial
    with Session(engine) as admin, Session(engine) as swapping:
        admin_principal = authenticate(admin, world.admin_key)
        principal = authenticate(swapping, world.operator_key)
        admin.commit()
        swapping.commit()
        # The change's first statement: it holds the battery ...
        custody.lock_battery(admin, removed)

        def swap() -> tuple[SwapOutcome, str | None]:
            request = SwapCreate(
                station_code=world.station.code,
                vin=world.vehicle.vin,
                removed_battery_serial=removed,
            )
            try:
                result = asyncio.run(
                    service.record_swap(SessionStatements(swapping), principal, request)
                )
            except Exception:
                swapping.rollback()
                raise
            swapping.commit()
            return result.outcome, result.reason_code

        # ... the swap holds the vehicle and waits for the battery ...
        swapped = Step(swap)
        wait_until(lambda: someone_waits_for(engine, backend_pid(admin)))
        # ... and the change goes on to record itself, which needs the vehicle's key.
        admin.execute(text("SET LOCAL lock_timeout = '5s'"))
        if change == "move_out":
            battery_service.move_battery(
                admin, admin_principal, removed, WarehousePlace(kind="warehouse", note="repair")
            )
        else:
            battery_service.change_battery_state(
                admin, admin_principal, removed, cause=CustodyCause.quarantine, note="smells"
            )
        admin.commit()
        assert swapped.result() == swap_ends


def _hold_like_the_ingest(session: Session, batteries: list[Battery]) -> None:
    """What an ingest batch does while it writes the batteries' readings (app/ingest/writer.py
    lock_batteries): their rows locked FOR NO KEY UPDATE, in serial order."""
    session.execute(
        text(
            "SELECT 1 FROM batteries WHERE serial = ANY(:serials) ORDER BY serial FOR NO KEY UPDATE"
        ),
        {"serials": [b.serial for b in batteries]},
    )


def test_a_swap_waits_for_batteries_an_ingest_batch_holds_for_a_moment(
    committed_world: tuple[SwapWorld, list[tuple[str, str]]], engine: Engine
) -> None:
    """Every charged battery of the station is in the batch being written: the swap is served
    once the batch commits, not refused (it was: allocation's SKIP LOCKED passed over them)."""
    world, drivers = committed_world
    with Session(engine) as ingest, Session(engine) as swapping:
        principal = authenticate(swapping, world.operator_key)
        swapping.commit()
        _hold_like_the_ingest(ingest, world.charged)
        ingest_pid = backend_pid(ingest)

        def swap() -> SwapRead:
            vin, serial = drivers[0]
            request = SwapCreate(
                station_code=world.station.code, vin=vin, removed_battery_serial=serial
            )
            result = asyncio.run(
                service.record_swap(SessionStatements(swapping), principal, request)
            )
            swapping.commit()
            return result

        swapped = Step(swap)
        wait_until(lambda: someone_waits_for(engine, ingest_pid) or swapped.done())
        ingest.commit()
        result = swapped.result()
    assert isinstance(result, SwapRead), result
    assert (result.outcome, result.reason_code) == (SwapOutcome.completed, None)
    assert result.installed_battery_serial == world.charged[-1].serial  # the highest SoC


def test_a_swap_waits_for_a_held_battery_only_briefly(
    committed_world: tuple[SwapWorld, list[tuple[str, str]]], engine: Engine
) -> None:
    """A batch that holds them longer than the allocation's wait (migration e6c2a8f4d1b3,
    250 ms): the swap is refused as before, in well under PostgreSQL's deadlock_timeout, and
    nothing waits on it."""
    world, drivers = committed_world
    with Session(engine) as ingest, Session(engine) as swapping:
        principal = authenticate(swapping, world.operator_key)
        swapping.commit()
        _hold_like_the_ingest(ingest, world.charged)
        vin, serial = drivers[0]
        request = SwapCreate(
            station_code=world.station.code, vin=vin, removed_battery_serial=serial
        )
        started = time.monotonic()
        result = asyncio.run(service.record_swap(SessionStatements(swapping), principal, request))
        waited = time.monotonic() - started
        swapping.commit()
        ingest.rollback()
    assert (result.outcome, result.reason_code) == (SwapOutcome.rejected, "NoBatteryAvailable")
    assert 0.2 <= waited < 1.0, waited
