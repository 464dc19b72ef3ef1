import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session

from app.auth.service import authenticate
from app.core import clock
from app.core.db import SessionStatements
from app.ingest.derived import update_batteries
from app.models import (
    Battery,
    BatteryState,
    CustodyCause,
    CustodyEvent,
    KeyRole,
    LocationKind,
    OrgRole,
    StationStatus,
    SwapEvent,
    SwapOutcome,
)
from app.swaps import service
from app.swaps.idempotency import claim
from app.swaps.schemas import SwapCreate
from devices.contract import RecordKind
from tests.fixtures.factories import (
    auth,
    make_battery,
    make_key,
    make_org,
    make_pack_type,
    make_station,
    make_vehicle,
    make_vehicle_model,
    slot_of,
)
from tests.fixtures.report_data import raw_connection
from tests.fixtures.swap_world import SwapWorld, build_swap_world


@pytest.fixture
def world(session: Session) -> SwapWorld:
    return build_swap_world(session, charged_socs=(95.0,))


def post_swap(
    client: TestClient, key: str, body: dict[str, object], idempotency_key: str | None = None
) -> "object":
    headers = auth(key)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return client.post("/v1/swaps", json=body, headers=headers)


def refreshed(session: Session, battery: Battery) -> Battery:
    session.expire_all()
    fresh = session.get(Battery, battery.id)
    assert fresh is not None
    return fresh


def test_completed_swap_exchanges_both_batteries(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    charged = world.charged[0]
    response = client.post("/v1/swaps", json=world.swap_body(), headers=auth(world.operator_key))

    assert response.status_code == 201, response.text
    swap = response.json()
    assert swap["outcome"] == "completed"
    assert swap["installed_battery_serial"] == charged.serial
    assert swap["removed_to_slot_number"] == 1
    assert swap["installed_from_slot_number"] == 1
    removed = refreshed(session, world.depleted)
    installed = refreshed(session, charged)
    assert (removed.location_kind, removed.slot_id, removed.vehicle_id) == (
        LocationKind.slot,
        slot_of(session, world.station, 1).id,
        None,
    )
    assert (installed.location_kind, installed.vehicle_id) == (
        LocationKind.vehicle,
        world.vehicle.id,
    )
    assert removed.soc_pct == 15.0
    vehicle = client.get(f"/v1/vehicles/{world.vehicle.vin}", headers=auth(world.admin_key))
    if vehicle.status_code == 200:
        assert vehicle.json()["installed_battery_serial"] == charged.serial


def test_completed_swap_writes_custody_history_for_both_batteries(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    response = client.post("/v1/swaps", json=world.swap_body(), headers=auth(world.operator_key))
    swap_id = response.json()["id"]

    events = session.scalars(
        select(CustodyEvent)
        .where(CustodyEvent.cause == CustodyCause.swap)
        .where(CustodyEvent.battery_id.in_([world.depleted.id, world.charged[0].id]))
    ).all()
    by_battery = {e.battery_id: e for e in events}
    assert len(events) == 2
    assert {str(e.swap_id) for e in events} == {swap_id}
    out = by_battery[world.depleted.id]
    assert (out.from_kind, out.from_vehicle_id, out.to_kind) == (
        LocationKind.vehicle,
        world.vehicle.id,
        LocationKind.slot,
    )
    into = by_battery[world.charged[0].id]
    assert (into.from_kind, into.to_kind, into.to_vehicle_id) == (
        LocationKind.slot,
        LocationKind.vehicle,
        world.vehicle.id,
    )


def test_swap_readings_replace_only_fields_they_are_newer_than(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    """A station's readings at a swap are readings like any other, per field: the removed
    battery's SoH from a BMS health record later than the swap stays; its SoC, older than
    the swap, is replaced; the installed battery's stored SoC, which the request did not
    read, is not restamped as measured at the swap."""
    now = clock.now()
    health_at = now + timedelta(hours=1)
    depleted = refreshed(session, world.depleted)
    depleted.soh_pct, depleted.soh_measured_at, depleted.soh_source = (
        91.0,
        health_at,
        "health_record",
    )
    depleted.soc_measured_at = now - timedelta(hours=2)
    session.flush()

    body = world.swap_body(finished_at=now.isoformat(), started_at=now.isoformat())
    response = post_swap(client, world.operator_key, body)

    assert response.status_code == 201, response.text
    removed = refreshed(session, world.depleted)
    assert (removed.soh_pct, removed.soh_measured_at, removed.soh_source) == (
        91.0, health_at, "health_record",
    )  # fmt: skip
    assert (removed.soc_pct, removed.soc_measured_at) == (15.0, now)
    installed = refreshed(session, world.charged[0])
    assert installed.soc_measured_at is None
    assert installed.soh_source == "registration"


def test_allocation_picks_highest_soc_then_fewest_cycles(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    station = world.station
    worn = make_battery(
        session,
        world.pack,
        world.owner,
        slot=slot_of(session, station, 2),
        soc_pct=99.0,
        cycles=800,
    )
    fresh = make_battery(
        session,
        world.pack,
        world.owner,
        slot=slot_of(session, station, 3),
        soc_pct=99.0,
        cycles=120,
    )
    make_battery(
        session,
        world.pack,
        world.owner,
        slot=slot_of(session, station, 4),
        soc_pct=100.0,
        state=BatteryState.quarantined,
    )

    response = post_swap(client, world.operator_key, world.swap_body())

    assert response.status_code == 201, response.text
    assert response.json()["installed_battery_serial"] == fresh.serial
    assert refreshed(session, worn).location_kind is LocationKind.slot


def test_allocation_breaks_ties_on_cycles_reported_before_a_newer_soc_reading(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    """Issue 14: a health record older than the battery's latest SoC reading still updates
    its cycles, and allocation's tie-break uses them."""
    station = world.station
    worn = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, station, 2), soc_pct=99.0,
        cycles=100,
    )  # fmt: skip
    other = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, station, 3), soc_pct=99.0,
        cycles=300,
    )  # fmt: skip
    session.flush()
    conn = raw_connection(session)
    now = clock.now()
    update_batteries(conn, {RecordKind.vehicle: [(worn.serial, now, 99.0)]})
    # Its BMS's count from a charge that ended an hour before that SoC reading.
    update_batteries(
        conn, {RecordKind.health: [(worn.serial, now - timedelta(hours=1), 90.0, 900)]}
    )
    assert refreshed(session, worn).equivalent_full_cycles == 900.0

    response = post_swap(client, world.operator_key, world.swap_body())

    assert response.status_code == 201, response.text
    assert response.json()["installed_battery_serial"] == other.serial


def test_allocation_skips_incompatible_and_low_soh_batteries(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    other_pack = make_pack_type(session, energy_kwh=282.0)
    make_battery(
        session, other_pack, world.owner, slot=slot_of(session, world.station, 2), soc_pct=100.0
    )
    make_battery(
        session,
        world.pack,
        world.owner,
        slot=slot_of(session, world.station, 3),
        soc_pct=100.0,
        soh_pct=60.0,
    )

    response = post_swap(client, world.operator_key, world.swap_body())

    assert response.json()["installed_battery_serial"] == world.charged[0].serial


def rejection(
    client: TestClient, world: SwapWorld, status: int, code: str, **overrides: object
) -> dict[str, object]:
    response = post_swap(client, world.operator_key, world.swap_body(**overrides))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def assert_custody_unchanged(session: Session, world: SwapWorld) -> None:
    assert refreshed(session, world.depleted).vehicle_id == world.vehicle.id
    for battery in world.charged:
        assert refreshed(session, battery).location_kind is LocationKind.slot


def test_swap_rejects_unknown_removed_battery(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    rejection(client, world, 422, "BatteryUnknown", removed_battery_serial="NOPE-1")
    assert_custody_unchanged(session, world)


def test_swap_rejects_unknown_installed_battery(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    rejection(client, world, 422, "BatteryUnknown", installed_battery_serial="NOPE-2")
    assert_custody_unchanged(session, world)


def test_swap_rejects_unknown_vehicle(client: TestClient, world: SwapWorld) -> None:
    rejection(client, world, 422, "VehicleUnknown", vin="LSFAB1234CZ800000")


def test_swap_rejects_removed_battery_not_in_vehicle(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    body = rejection(
        client, world, 409, "BatteryMismatch", removed_battery_serial=world.charged[0].serial
    )
    assert world.depleted.serial in str(body["detail"])
    assert_custody_unchanged(session, world)


def test_swap_rejects_battery_at_another_station(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    elsewhere = make_station(session, world.operator, slots=1)
    far = make_battery(session, world.pack, world.owner, slot=slot_of(session, elsewhere, 1))
    rejection(client, world, 409, "BatteryNotAtStation", installed_battery_serial=far.serial)
    assert refreshed(session, far).location_kind is LocationKind.slot


def test_swap_rejects_quarantined_battery(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    bad = make_battery(
        session,
        world.pack,
        world.owner,
        slot=slot_of(session, world.station, 2),
        soc_pct=100.0,
        state=BatteryState.quarantined,
    )
    rejection(client, world, 409, "BatteryDamaged", installed_battery_serial=bad.serial)
    assert_custody_unchanged(session, world)


def test_swap_rejects_incompatible_pack_type(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    other = make_battery(
        session,
        make_pack_type(session, 282.0),
        world.owner,
        slot=slot_of(session, world.station, 2),
        soc_pct=100.0,
    )
    rejection(client, world, 422, "BatteryType", installed_battery_serial=other.serial)


def test_swap_rejects_battery_below_target_soc(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    low = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.station, 2), soc_pct=80.0
    )
    body = rejection(client, world, 409, "BatterySoC", installed_battery_serial=low.serial)
    assert "90%" in str(body["detail"])


def test_swap_uses_station_reading_for_soc_check(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    stale = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.station, 2), soc_pct=50.0
    )
    response = post_swap(
        client,
        world.operator_key,
        world.swap_body(installed_battery_serial=stale.serial, installed_soc_pct=96.0),
    )
    assert response.status_code == 201, response.text
    assert refreshed(session, stale).soc_pct == 96.0


def test_swap_rejects_battery_below_soh_floor(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    worn = make_battery(
        session,
        world.pack,
        world.owner,
        slot=slot_of(session, world.station, 2),
        soc_pct=100.0,
        soh_pct=65.0,
    )
    rejection(client, world, 409, "BatterySoHLow", installed_battery_serial=worn.serial)


def test_swap_rejects_when_no_battery_is_available(client: TestClient, session: Session) -> None:
    world = build_swap_world(session, charged_socs=(40.0, 85.0))
    rejection(client, world, 409, "NoBatteryAvailable")
    assert_custody_unchanged(session, world)


def test_swap_rejects_at_station_under_maintenance(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    world.station.status = StationStatus.maintenance
    session.flush()
    rejection(client, world, 409, "StationUnavailable")


def test_rejected_swaps_are_recorded_and_listed(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    body = rejection(client, world, 422, "BatteryUnknown", installed_battery_serial="NOPE-3")

    stored = session.get(SwapEvent, body["swap_id"])
    assert stored is not None
    assert stored.reason_code == "BatteryUnknown"
    listed = client.get(
        "/v1/swaps",
        params={"outcome": "rejected", "station_code": world.station.code},
        headers=auth(world.operator_key),
    ).json()
    assert [s["reason_code"] for s in listed["items"]] == ["BatteryUnknown"]
    seen_by_oem = client.get("/v1/swaps", headers=auth(world.oem_key)).json()
    assert [s["id"] for s in seen_by_oem["items"]] == [body["swap_id"]]


def test_swap_at_unknown_station_is_404(client: TestClient, world: SwapWorld) -> None:
    response = post_swap(client, world.operator_key, world.swap_body(station_code="NOWHERE"))
    assert response.status_code == 404
    assert response.json()["code"] == "StationNotFound"


def test_operator_cannot_swap_at_another_operators_station(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    rival_key = make_key(session, KeyRole.operator, make_org(session, OrgRole.operator))
    response = post_swap(client, rival_key, world.swap_body())
    assert response.status_code == 403
    assert_custody_unchanged(session, world)


def test_oem_key_cannot_record_swaps(client: TestClient, world: SwapWorld) -> None:
    assert post_swap(client, world.oem_key, world.swap_body()).status_code == 403


def test_swap_requires_a_key(client: TestClient, world: SwapWorld) -> None:
    response = client.post("/v1/swaps", json=world.swap_body())
    assert response.status_code == 401
    assert response.json()["code"] == "Unauthorized"


def test_retried_swap_with_same_idempotency_key_returns_first_result(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    first = post_swap(client, world.operator_key, world.swap_body(), idempotency_key="k-1")
    again = post_swap(client, world.operator_key, world.swap_body(), idempotency_key="k-1")

    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    count = session.scalars(select(SwapEvent).where(SwapEvent.vin == world.vehicle.vin)).all()
    assert len(count) == 1


def test_retried_rejection_is_replayed_not_recorded_twice(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    body = world.swap_body(installed_battery_serial="NOPE-4")
    first = post_swap(client, world.operator_key, body, idempotency_key="k-2")
    again = post_swap(client, world.operator_key, body, idempotency_key="k-2")

    assert first.status_code == again.status_code == 422
    assert first.json()["swap_id"] == again.json()["swap_id"]
    rows = session.scalars(select(SwapEvent).where(SwapEvent.vin == world.vehicle.vin)).all()
    assert len(rows) == 1


def test_idempotency_key_reused_with_other_body_is_422(
    client: TestClient, world: SwapWorld
) -> None:
    post_swap(client, world.operator_key, world.swap_body(), idempotency_key="k-3")
    response = post_swap(
        client, world.operator_key, world.swap_body(removed_soc_pct=20.0), idempotency_key="k-3"
    )
    assert response.status_code == 422
    assert response.json()["code"] == "IdempotencyKeyReused"


def test_second_swap_of_same_vehicle_uses_new_battery(client: TestClient, session: Session) -> None:
    world = build_swap_world(session, charged_socs=(95.0, 96.0))
    first = post_swap(client, world.operator_key, world.swap_body()).json()
    second = post_swap(
        client,
        world.operator_key,
        world.swap_body(removed_battery_serial=first["installed_battery_serial"]),
    )
    assert second.status_code == 201, second.text
    assert second.json()["installed_battery_serial"] == world.charged[0].serial
    # The battery just taken out went back into a slot and is not offered again while low.
    assert second.json()["installed_battery_serial"] != first["installed_battery_serial"]


def test_swap_list_paginates_newest_first(client: TestClient, session: Session) -> None:
    world = build_swap_world(session, charged_socs=(95.0,))
    for n in range(5):
        post_swap(
            client,
            world.operator_key,
            world.swap_body(
                installed_battery_serial=f"MISSING-{n}",
                started_at=f"2026-01-0{n + 1}T10:00:00+00:00",
            ),
        )
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 2, "station_code": world.station.code}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/swaps", params=params, headers=auth(world.operator_key)).json()
        seen.extend(s["started_at"][:10] for s in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"2026-01-0{n}" for n in (5, 4, 3, 2, 1)]


def test_swap_list_rejects_forged_cursor(client: TestClient, world: SwapWorld) -> None:
    response = client.get(
        "/v1/swaps", params={"cursor": "bm90LWEtY3Vyc29y"}, headers=auth(world.operator_key)
    )
    assert response.status_code == 422


def test_oem_does_not_see_other_oems_swaps(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    created = post_swap(client, world.operator_key, world.swap_body()).json()
    other_oem_key = make_key(session, KeyRole.oem, make_org(session, OrgRole.oem))
    assert client.get(f"/v1/swaps/{created['id']}", headers=auth(other_oem_key)).status_code == 404
    assert client.get("/v1/swaps", headers=auth(other_oem_key)).json()["items"] == []
    assert client.get(f"/v1/swaps/{created['id']}", headers=auth(world.oem_key)).status_code == 200


def test_swap_body_validation_is_precise(client: TestClient, world: SwapWorld) -> None:
    response = post_swap(client, world.operator_key, world.swap_body(removed_soc_pct=140))
    assert response.status_code == 422
    assert "removed_soc_pct" in response.json()["detail"]


def test_swap_between_two_oems_sharing_a_pack_type(
    client: TestClient, session: Session, world: SwapWorld
) -> None:
    other_oem = make_org(session, OrgRole.oem)
    other_model = make_vehicle_model(session, other_oem, world.pack)
    truck = make_vehicle(session, other_model)
    carried = make_battery(
        session, world.pack, world.owner, oem=other_oem, vehicle=truck, soc_pct=10.0
    )
    response = post_swap(
        client,
        world.operator_key,
        {
            "station_code": world.station.code,
            "vin": truck.vin,
            "removed_battery_serial": carried.serial,
        },
    )
    assert response.status_code == 201, response.text


def swap_request(world: SwapWorld, **overrides: object) -> SwapCreate:
    return SwapCreate.model_validate(world.swap_body(**overrides))


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements sent to the database while the test body runs."""
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("installed_serial", [None, "NOPE-5"], ids=["completed", "rejected"])
def test_a_swap_is_one_database_round_trip(
    session: Session, world: SwapWorld, statements: list[str], installed_serial: str | None
) -> None:
    principal = authenticate(session, world.operator_key)
    statements.clear()

    request = swap_request(world, installed_battery_serial=installed_serial)
    swap = asyncio.run(service.record_swap(SessionStatements(session), principal, request))

    assert swap.outcome is (
        SwapOutcome.completed if installed_serial is None else SwapOutcome.rejected
    )
    assert len(statements) == 1, statements


def test_an_idempotency_claim_is_one_database_round_trip(
    session: Session, world: SwapWorld, statements: list[str]
) -> None:
    principal = authenticate(session, world.operator_key)
    statements.clear()

    claimed = asyncio.run(
        claim(
            SessionStatements(session), api_key_id=principal.api_key_id, key="k-rt", fingerprint="f"
        )
    )

    assert claimed is None
    assert len(statements) == 1, statements


def test_rejection_details_read_as_before(session: Session, world: SwapWorld) -> None:
    """The details are written by the database function; these are the texts the Python
    rules wrote, numbers formatted as f"{x:g}"."""
    principal = authenticate(session, world.operator_key)
    station, vin = world.station.code, world.vehicle.vin
    low = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.station, 2), soc_pct=12.5
    )
    worn = make_battery(
        session,
        world.pack,
        world.owner,
        slot=slot_of(session, world.station, 3),
        soc_pct=100.0,
        soh_pct=65.25,
    )
    off = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.station, 4), soc_pct=100.0
    )
    slot_of(session, world.station, 4).enabled = False
    session.flush()
    cases = [
        (
            {"installed_battery_serial": low.serial},
            f"battery {low.serial} is at 12.5% SoC, below the station's target 90%",
        ),
        (
            {"installed_battery_serial": low.serial, "installed_soc_pct": 89.99999},
            f"battery {low.serial} is at 90% SoC, below the station's target 90%",
        ),
        (
            {"installed_battery_serial": worn.serial},
            f"battery {worn.serial} is at 65.25% SoH, below the floor of 70%",
        ),
        (
            {"installed_battery_serial": off.serial},
            f"battery {off.serial} sits in disabled slot 4 of {station}",
        ),
        (
            {"removed_battery_serial": low.serial},
            f"battery {low.serial} is not installed in vehicle {vin} "
            f"(the vehicle carries {world.depleted.serial})",
        ),
    ]
    for overrides, detail in cases:
        request = swap_request(world, **overrides)
        swap = asyncio.run(service.record_swap(SessionStatements(session), principal, request))
        assert (swap.outcome, swap.detail) == (SwapOutcome.rejected, detail)

    world.charged[0].soc_pct = 85.0
    world.station.target_soc_pct = 87.125
    session.flush()
    swap = asyncio.run(
        service.record_swap(SessionStatements(session), principal, swap_request(world))
    )
    assert swap.detail == (
        f"station {station} holds no in-service battery compatible with vehicle {vin} "
        "at or above 87.125% SoC and 70% SoH"
    )


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 80.0, 12.5, 87.125, 99.99999, 99.999995, 12.34565, 10.03125, 1 / 3, 1e-05,
     0.0001, 123456.5, 999999.5, 1234567.0, 5e-324, 1.7976931348623157e308],
)  # fmt: skip
def test_database_formats_numbers_as_python_g(session: Session, value: float) -> None:
    shown = session.scalar(text("SELECT swapfleet_format_g(:x)"), {"x": value})
    assert shown == f"{value:g}"
