"""The batteries REST API: registration, reads, moves, lifecycle, scopes and pagination."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from app.core.pagination import encode_cursor
from app.models import (
    BatteryState,
    CustodyEvent,
    KeyRole,
    Organization,
    OrgRole,
    PackType,
    Station,
    Vehicle,
)
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
    unique,
)


@dataclass
class World:
    operator: Organization
    other_operator: Organization
    owner: Organization
    oem: Organization
    other_oem: Organization
    pack: PackType
    other_pack: PackType
    station: Station
    other_station: Station
    vehicle: Vehicle
    admin_key: str
    operator_key: str
    oem_key: str
    other_oem_key: str

    @property
    def admin(self) -> dict[str, str]:
        return auth(self.admin_key)

    @property
    def op(self) -> dict[str, str]:
        return auth(self.operator_key)


@pytest.fixture
def world(session: Session) -> World:
    operator = make_org(session, OrgRole.operator)
    other_operator = make_org(session, OrgRole.operator)
    oem = make_org(session, OrgRole.oem)
    other_oem = make_org(session, OrgRole.oem)
    pack = make_pack_type(session)
    model = make_vehicle_model(session, oem, pack)
    return World(
        operator=operator,
        other_operator=other_operator,
        owner=make_org(session, OrgRole.owner),
        oem=oem,
        other_oem=other_oem,
        pack=pack,
        other_pack=make_pack_type(session),
        station=make_station(session, operator),
        other_station=make_station(session, other_operator),
        vehicle=make_vehicle(session, model),
        admin_key=make_key(session, KeyRole.admin),
        operator_key=make_key(session, KeyRole.operator, operator),
        oem_key=make_key(session, KeyRole.oem, oem),
        other_oem_key=make_key(session, KeyRole.oem, other_oem),
    )


def register_body(w: World, location: dict[str, Any], /, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "serial": unique("SN"),
        "pack_type_code": w.pack.code,
        "owner_code": w.owner.code,
        "oem_code": w.oem.code,
        "manufactured_on": "2025-03-01",
        "location": location,
        "soc_pct": 80.0,
        "soh_pct": 99.5,
        "equivalent_full_cycles": 3.0,
    }
    body.update(overrides)
    return body


def slot_place(station: Station, number: int) -> dict[str, Any]:
    return {"kind": "slot", "station_code": station.code, "slot_number": number}


def assert_problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"].endswith(code)


def history(client: TestClient, w: World, serial: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/batteries/{serial}/history", headers=w.admin)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# ---------------------------------------------------------------- registration


def test_admin_registers_battery_in_slot_and_history_starts_with_registered(
    client: TestClient, world: World
) -> None:
    body = register_body(world, slot_place(world.station, 2))
    response = client.post("/v1/batteries", json=body, headers=world.admin)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created == {
        "serial": body["serial"],
        "pack_type_code": world.pack.code,
        "owner_code": world.owner.code,
        "oem_code": world.oem.code,
        "manufactured_on": "2025-03-01",
        "state": "in_service",
        "location": {
            "kind": "slot",
            "station_code": world.station.code,
            "slot_number": 2,
            "vin": None,
            "note": None,
        },
        "soc_pct": 80.0,
        "soh_pct": 99.5,
        "equivalent_full_cycles": 3.0,
        "readings_at": None,
        # Given at registration: labelled so, with no measured-at time.
        "soc_measured_at": None,
        "soh_measured_at": None,
        "soh_source": "registration",
        "cycles_measured_at": None,
        "cycles_source": "registration",
    }
    fetched = client.get(f"/v1/batteries/{body['serial']}", headers=world.admin)
    assert fetched.json() == created

    (registered,) = history(client, world, body["serial"])
    assert registered["cause"] == "registered"
    assert registered["from_location"] is None
    assert registered["to_location"]["station_code"] == world.station.code
    assert registered["to_location"]["slot_number"] == 2
    assert registered["state_from"] is None
    assert registered["state_to"] == "in_service"


def test_register_in_warehouse_keeps_the_note_as_location(client: TestClient, world: World) -> None:
    body = register_body(world, {"kind": "warehouse", "note": "Shelf B3"}, oem_code=None)
    response = client.post("/v1/batteries", json=body, headers=world.op)
    assert response.status_code == 201, response.text
    assert response.json()["location"] == {
        "kind": "warehouse",
        "station_code": None,
        "slot_number": None,
        "vin": None,
        "note": "Shelf B3",
    }
    assert response.json()["oem_code"] is None
    assert history(client, world, body["serial"])[0]["note"] == "Shelf B3"


def test_admin_registers_battery_into_vehicle_that_takes_its_pack_type(
    client: TestClient, world: World
) -> None:
    body = register_body(world, {"kind": "vehicle", "vin": world.vehicle.vin})
    response = client.post("/v1/batteries", json=body, headers=world.admin)
    assert response.status_code == 201, response.text
    assert response.json()["location"]["kind"] == "vehicle"
    assert response.json()["location"]["vin"] == world.vehicle.vin


def test_register_into_vehicle_of_other_pack_type_is_422_battery_type(
    client: TestClient, world: World
) -> None:
    body = register_body(
        world, {"kind": "vehicle", "vin": world.vehicle.vin}, pack_type_code=world.other_pack.code
    )
    assert_problem(client.post("/v1/batteries", json=body, headers=world.admin), 422, "BatteryType")


def test_register_into_vehicle_that_has_a_battery_is_409(
    client: TestClient, session: Session, world: World
) -> None:
    make_battery(session, world.pack, world.owner, vehicle=world.vehicle)
    body = register_body(world, {"kind": "vehicle", "vin": world.vehicle.vin})
    response = client.post("/v1/batteries", json=body, headers=world.admin)
    assert_problem(response, 409, "VehicleHasBattery")


def test_register_into_occupied_slot_is_409_slot_occupied(
    client: TestClient, session: Session, world: World
) -> None:
    existing = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.station, 1)
    )
    body = register_body(world, slot_place(world.station, 1))
    response = client.post("/v1/batteries", json=body, headers=world.admin)
    assert_problem(response, 409, "SlotOccupied")
    assert existing.serial in response.json()["detail"]
    assert client.get(f"/v1/batteries/{body['serial']}", headers=world.admin).status_code == 404


def test_register_into_disabled_slot_is_409_slot_disabled(
    client: TestClient, session: Session, world: World
) -> None:
    slot_of(session, world.station, 3).enabled = False
    session.flush()
    body = register_body(world, slot_place(world.station, 3))
    assert_problem(
        client.post("/v1/batteries", json=body, headers=world.admin), 409, "SlotDisabled"
    )


def test_register_duplicate_serial_is_409(client: TestClient, world: World) -> None:
    body = register_body(world, {"kind": "warehouse"})
    assert client.post("/v1/batteries", json=body, headers=world.admin).status_code == 201
    again = client.post("/v1/batteries", json=body, headers=world.admin)
    assert_problem(again, 409, "BatterySerialTaken")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"pack_type_code": "NOPE"}, "UnknownReference"),
        ({"owner_code": "NOPE"}, "UnknownReference"),
        (
            {"location": {"kind": "slot", "station_code": "NOPE", "slot_number": 1}},
            "UnknownReference",
        ),
        ({"location": {"kind": "vehicle", "vin": "LSFAB1234CZ800000"}}, "UnknownReference"),
    ],
)
def test_register_with_unknown_reference_is_422(
    client: TestClient, world: World, overrides: dict[str, Any], code: str
) -> None:
    body = register_body(world, {"kind": "warehouse"}, **overrides)
    assert_problem(client.post("/v1/batteries", json=body, headers=world.admin), 422, code)


def test_register_with_slot_number_the_station_lacks_is_422(
    client: TestClient, world: World
) -> None:
    body = register_body(world, slot_place(world.station, 99))
    response = client.post("/v1/batteries", json=body, headers=world.admin)
    assert_problem(response, 422, "UnknownReference")
    assert "no slot 99" in response.json()["detail"]


def test_register_with_organizations_of_wrong_role_is_422(client: TestClient, world: World) -> None:
    as_owner = register_body(world, {"kind": "warehouse"}, owner_code=world.operator.code)
    response = client.post("/v1/batteries", json=as_owner, headers=world.admin)
    assert_problem(response, 422, "OrganizationRoleMismatch")
    as_oem = register_body(world, {"kind": "warehouse"}, oem_code=world.owner.code)
    response = client.post("/v1/batteries", json=as_oem, headers=world.admin)
    assert_problem(response, 422, "OrganizationRoleMismatch")


@pytest.mark.parametrize(
    "change",
    [
        {"location": {"kind": "garage"}},
        {"location": {"station_code": "X", "slot_number": 1}},
        {"location": {"kind": "slot", "station_code": "X"}},
        {"location": {"kind": "slot", "station_code": "X", "slot_number": 0}},
        {"location": {"kind": "warehouse", "vin": "X"}},
        {"soc_pct": 101},
        {"equivalent_full_cycles": -1},
        {"energy_throughput_kwh": -0.1, "capacity_throughput_ah": 1.0},
        {"energy_throughput_kwh": 1e12, "capacity_throughput_ah": 1.0},
        {"energy_throughput_kwh": 1.0, "capacity_throughput_ah": -5},
        {"energy_throughput_kwh": 1.0, "capacity_throughput_ah": "lots"},
        {"energy_throughput_kwh": 1.0},  # half a history
        {"serial": "has spaces/and slash"},
        {"manufactured_on": "yesterday"},
        {"state": "retired"},
    ],
)
def test_register_with_bad_body_is_422_validation_error(
    client: TestClient, world: World, change: dict[str, Any]
) -> None:
    body = register_body(world, {"kind": "warehouse"}, **change)
    response = client.post("/v1/batteries", json=body, headers=world.admin)
    assert_problem(response, 422, "ValidationError")


def test_a_lifetime_history_given_at_registration_is_carried_into_the_passport(
    client: TestClient, world: World
) -> None:
    body = register_body(
        world,
        {"kind": "warehouse"},
        equivalent_full_cycles=412.5,
        energy_throughput_kwh=23_100.0,
        capacity_throughput_ah=180_000.0,
    )
    assert client.post("/v1/batteries", json=body, headers=world.admin).status_code == 201
    passport = client.get(f"/v1/batteries/{body['serial']}/passport", headers=world.admin)
    assert passport.status_code == 200, passport.text
    durability = passport.json()["durability"]
    # No telemetry yet: the lifetime figures are the history, covering manufacture to
    # registration, labelled as given at registration.
    assert durability["equivalent_full_cycles"] == 412.5
    assert durability["equivalent_full_cycles_source"] == "registration"
    assert durability["energy_throughput_kwh"] == 23_100.0
    assert durability["energy_throughput_at_registration_kwh"] == 23_100.0
    assert durability["capacity_throughput_ah"] == 180_000.0
    assert durability["throughput_from"] == "2025-03-01"
    assert durability["throughput_to"] is not None
    assert durability["time_above_45c_h"] is None


def test_a_battery_registered_without_cycles_reports_them_as_unknown(
    client: TestClient, world: World
) -> None:
    body = register_body(world, {"kind": "warehouse"})
    del body["equivalent_full_cycles"]
    created = client.post("/v1/batteries", json=body, headers=world.admin)
    assert created.status_code == 201, created.text
    assert created.json()["cycles_source"] is None
    passport = client.get(f"/v1/batteries/{body['serial']}/passport", headers=world.admin).json()
    assert passport["durability"]["equivalent_full_cycles"] is None
    assert "durability.equivalent_full_cycles" in passport["not_derivable"]


def test_operator_registers_only_into_its_own_stations(client: TestClient, world: World) -> None:
    own = register_body(world, slot_place(world.station, 1))
    assert client.post("/v1/batteries", json=own, headers=world.op).status_code == 201
    foreign = register_body(world, slot_place(world.other_station, 1))
    response = client.post("/v1/batteries", json=foreign, headers=world.op)
    assert_problem(response, 403, "DestinationOutOfScope")
    into_vehicle = register_body(world, {"kind": "vehicle", "vin": world.vehicle.vin})
    response = client.post("/v1/batteries", json=into_vehicle, headers=world.op)
    assert_problem(response, 403, "DestinationOutOfScope")


def test_oem_key_cannot_register_and_no_key_is_401(client: TestClient, world: World) -> None:
    body = register_body(world, {"kind": "warehouse"})
    assert_problem(
        client.post("/v1/batteries", json=body, headers=auth(world.oem_key)), 403, "Forbidden"
    )
    assert_problem(client.post("/v1/batteries", json=body), 401, "Unauthorized")
    assert_problem(client.get("/v1/batteries"), 401, "Unauthorized")


# ---------------------------------------------------------------- reads and scopes


def test_battery_in_vehicle_shows_its_vin(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(session, world.pack, world.owner, oem=world.oem, vehicle=world.vehicle)
    response = client.get(f"/v1/batteries/{battery.serial}", headers=world.op)
    assert response.status_code == 200, response.text
    assert response.json()["location"] == {
        "kind": "vehicle",
        "station_code": None,
        "slot_number": None,
        "vin": world.vehicle.vin,
        "note": None,
    }


def test_oem_key_sees_its_own_battery_and_gets_404_for_another_oems(
    client: TestClient, session: Session, world: World
) -> None:
    mine = make_battery(session, world.pack, world.owner, oem=world.oem)
    theirs = make_battery(session, world.pack, world.owner, oem=world.other_oem)
    unowned = make_battery(session, world.pack, world.owner)
    headers = auth(world.oem_key)

    assert client.get(f"/v1/batteries/{mine.serial}", headers=headers).status_code == 200
    missing = client.get("/v1/batteries/NO-SUCH-BATTERY", headers=headers)
    for serial in (theirs.serial, unowned.serial):
        response = client.get(f"/v1/batteries/{serial}", headers=headers)
        assert_problem(response, 404, "BatteryNotFound")
        # Same shape as a battery that does not exist, so existence does not leak.
        assert response.json().keys() == missing.json().keys()
        assert_problem(
            client.get(f"/v1/batteries/{serial}/history", headers=headers), 404, "BatteryNotFound"
        )
    assert client.get(f"/v1/batteries/{mine.serial}/history", headers=headers).status_code == 200


def test_oem_key_list_holds_only_its_own_batteries(
    client: TestClient, session: Session, world: World
) -> None:
    mine = {make_battery(session, world.pack, world.owner, oem=world.oem).serial for _ in range(3)}
    theirs = make_battery(session, world.pack, world.owner, oem=world.other_oem)
    response = client.get(
        "/v1/batteries", params={"owner_code": world.owner.code}, headers=auth(world.oem_key)
    )
    assert response.status_code == 200, response.text
    assert {item["serial"] for item in response.json()["items"]} == mine
    # Asking for another OEM's program by code gives nothing rather than its batteries.
    response = client.get(
        "/v1/batteries", params={"oem_code": world.other_oem.code}, headers=auth(world.oem_key)
    )
    assert response.json()["items"] == []
    response = client.get(
        "/v1/batteries", params={"owner_code": world.owner.code}, headers=auth(world.other_oem_key)
    )
    assert [item["serial"] for item in response.json()["items"]] == [theirs.serial]


def test_operator_reads_batteries_of_any_station(
    client: TestClient, session: Session, world: World
) -> None:
    foreign = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.other_station, 1)
    )
    response = client.get(f"/v1/batteries/{foreign.serial}", headers=world.op)
    assert response.status_code == 200
    assert response.json()["location"]["station_code"] == world.other_station.code


def test_list_filters_combine(client: TestClient, session: Session, world: World) -> None:
    s1 = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.station, 1), soc_pct=95
    )
    s2 = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.station, 2), soc_pct=40
    )
    make_battery(session, world.pack, world.owner, slot=slot_of(session, world.other_station, 1))
    in_vehicle = make_battery(session, world.pack, world.owner, vehicle=world.vehicle, soh_pct=70)
    quarantined = make_battery(
        session, world.other_pack, world.owner, state=BatteryState.quarantined
    )

    def serials(**params: Any) -> list[str]:
        params.setdefault("owner_code", world.owner.code)
        response = client.get("/v1/batteries", params=params, headers=world.admin)
        assert response.status_code == 200, response.text
        return [item["serial"] for item in response.json()["items"]]

    assert serials(station_code=world.station.code) == sorted([s1.serial, s2.serial])
    assert serials(station_code=world.station.code, min_soc_pct=90) == [s1.serial]
    assert serials(location_kind="vehicle") == [in_vehicle.serial]
    assert serials(max_soh_pct=80) == [in_vehicle.serial]
    assert serials(state="quarantined") == [quarantined.serial]
    assert serials(pack_type_code=world.other_pack.code) == [quarantined.serial]
    assert len(serials()) == 5


def test_list_rejects_bad_filters(client: TestClient, world: World) -> None:
    for params in ({"state": "lost"}, {"location_kind": "moon"}, {"min_soc_pct": 120}):
        response = client.get("/v1/batteries", params=params, headers=world.admin)
        assert_problem(response, 422, "ValidationError")


def test_list_pages_by_serial_without_gaps_or_repeats(
    client: TestClient, session: Session, world: World
) -> None:
    made = sorted(make_battery(session, world.pack, world.owner).serial for _ in range(5))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"owner_code": world.owner.code, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/v1/batteries", params=params, headers=world.admin).json()
        seen += [item["serial"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    assert pages == 3


def test_list_with_forged_cursor_is_422(client: TestClient, world: World) -> None:
    response = client.get("/v1/batteries", params={"cursor": "bm90LWpzb24"}, headers=world.admin)
    assert_problem(response, 422, "InvalidCursor")


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def test_list_uses_the_same_number_of_queries_for_many_batteries(
    client: TestClient, session: Session, world: World, statements: list[str]
) -> None:
    def queries_for_listing() -> int:
        statements.clear()
        response = client.get(
            "/v1/batteries", params={"owner_code": world.owner.code}, headers=world.admin
        )
        assert response.status_code == 200
        return len(statements)

    make_battery(session, world.pack, world.owner, slot=slot_of(session, world.station, 1))
    # The first request also checks the API key, which the process then caches for a while.
    queries_for_listing()
    few = queries_for_listing()
    for number in (2, 3, 4):
        make_battery(session, world.pack, world.owner, slot=slot_of(session, world.station, number))
    make_battery(session, world.pack, world.owner, vehicle=world.vehicle)
    assert queries_for_listing() == few


# ---------------------------------------------------------------- moves


def move(client: TestClient, headers: dict[str, str], serial: str, body: dict[str, Any]) -> Any:
    return client.post(f"/v1/batteries/{serial}/move", json=body, headers=headers)


def test_move_between_slots_records_manual_move_with_both_places(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.station, 1)
    )
    response = move(
        client, world.op, battery.serial, {**slot_place(world.station, 4), "note": "rebalance"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["location"]["slot_number"] == 4

    last = history(client, world, battery.serial)[-1]
    assert last["cause"] == "manual_move"
    assert last["from_location"] == {
        "kind": "slot",
        "station_code": world.station.code,
        "slot_number": 1,
        "vin": None,
        "note": None,
    }
    assert last["to_location"]["slot_number"] == 4
    assert last["note"] == "rebalance"
    assert last["state_from"] == last["state_to"] == "in_service"
    stored = session.scalar(
        select(CustodyEvent)
        .where(CustodyEvent.battery_id == battery.id)
        .order_by(CustodyEvent.id.desc())
    )
    assert stored is not None
    assert stored.api_key_id is not None


def test_admin_moves_battery_into_compatible_empty_vehicle_then_out_to_transit(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(session, world.pack, world.owner)
    response = move(
        client, world.admin, battery.serial, {"kind": "vehicle", "vin": world.vehicle.vin}
    )
    assert response.status_code == 200, response.text
    assert response.json()["location"]["vin"] == world.vehicle.vin

    response = move(client, world.admin, battery.serial, {"kind": "in_transit", "note": "truck 7"})
    assert response.status_code == 200, response.text
    assert response.json()["location"]["kind"] == "in_transit"
    assert response.json()["location"]["note"] == "truck 7"
    from_vins = [
        (e["from_location"] or {}).get("vin") for e in history(client, world, battery.serial)
    ]
    assert from_vins == [None, None, world.vehicle.vin]


def test_move_into_vehicle_of_other_pack_type_is_422(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(session, world.other_pack, world.owner)
    response = move(
        client, world.admin, battery.serial, {"kind": "vehicle", "vin": world.vehicle.vin}
    )
    assert_problem(response, 422, "BatteryType")


def test_move_into_vehicle_with_a_battery_is_409(
    client: TestClient, session: Session, world: World
) -> None:
    make_battery(session, world.pack, world.owner, vehicle=world.vehicle)
    battery = make_battery(session, world.pack, world.owner)
    response = move(
        client, world.admin, battery.serial, {"kind": "vehicle", "vin": world.vehicle.vin}
    )
    assert_problem(response, 409, "VehicleHasBattery")


def test_move_into_occupied_or_disabled_slot_is_409_and_changes_nothing(
    client: TestClient, session: Session, world: World
) -> None:
    make_battery(session, world.pack, world.owner, slot=slot_of(session, world.station, 1))
    slot_of(session, world.station, 2).enabled = False
    session.flush()
    battery = make_battery(session, world.pack, world.owner)
    assert_problem(
        move(client, world.op, battery.serial, slot_place(world.station, 1)), 409, "SlotOccupied"
    )
    assert_problem(
        move(client, world.op, battery.serial, slot_place(world.station, 2)), 409, "SlotDisabled"
    )
    assert (
        client.get(f"/v1/batteries/{battery.serial}", headers=world.op).json()["location"]["kind"]
        == "warehouse"
    )
    assert len(history(client, world, battery.serial)) == 1


def test_retired_battery_moves_only_between_warehouse_and_transit(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(session, world.pack, world.owner, state=BatteryState.retired)
    assert_problem(
        move(client, world.admin, battery.serial, slot_place(world.station, 1)),
        409,
        "BatteryRetired",
    )
    assert_problem(
        move(client, world.admin, battery.serial, {"kind": "vehicle", "vin": world.vehicle.vin}),
        409,
        "BatteryRetired",
    )
    assert move(client, world.admin, battery.serial, {"kind": "in_transit"}).status_code == 200


def test_quarantined_battery_may_go_to_a_slot_but_not_a_vehicle(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(session, world.pack, world.owner, state=BatteryState.quarantined)
    response = move(
        client, world.admin, battery.serial, {"kind": "vehicle", "vin": world.vehicle.vin}
    )
    assert_problem(response, 409, "BatteryQuarantined")
    assert (
        move(client, world.admin, battery.serial, slot_place(world.station, 1)).status_code == 200
    )


def test_operator_moves_only_batteries_at_its_stations_or_unattached(
    client: TestClient, session: Session, world: World
) -> None:
    foreign = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.other_station, 1)
    )
    in_vehicle = make_battery(session, world.pack, world.owner, vehicle=world.vehicle)
    in_warehouse = make_battery(session, world.pack, world.owner)

    assert_problem(
        move(client, world.op, foreign.serial, {"kind": "warehouse"}), 403, "BatteryOutOfScope"
    )
    assert_problem(
        move(client, world.op, in_vehicle.serial, {"kind": "warehouse"}), 403, "BatteryOutOfScope"
    )
    assert_problem(
        move(client, world.op, in_warehouse.serial, slot_place(world.other_station, 2)),
        403,
        "DestinationOutOfScope",
    )
    assert (
        move(client, world.op, in_warehouse.serial, slot_place(world.station, 2)).status_code == 200
    )
    # Now at the operator's own station it stays in scope.
    assert move(client, world.op, in_warehouse.serial, {"kind": "warehouse"}).status_code == 200


def test_oem_key_cannot_move(client: TestClient, session: Session, world: World) -> None:
    battery = make_battery(session, world.pack, world.owner, oem=world.oem)
    assert_problem(
        move(client, auth(world.oem_key), battery.serial, {"kind": "warehouse"}), 403, "Forbidden"
    )


def test_move_unknown_battery_is_404(client: TestClient, world: World) -> None:
    assert_problem(
        move(client, world.admin, "NO-SUCH", {"kind": "warehouse"}), 404, "BatteryNotFound"
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"kind": "garage"},
        {"kind": "slot", "slot_number": 1},
        {"kind": "vehicle"},
        {"kind": "warehouse", "note": "x" * 201},
        {"kind": "warehouse", "state": "retired"},
    ],
)
def test_move_with_bad_body_is_422(
    client: TestClient, session: Session, world: World, body: dict[str, Any]
) -> None:
    battery = make_battery(session, world.pack, world.owner)
    assert_problem(move(client, world.admin, battery.serial, body), 422, "ValidationError")


# ---------------------------------------------------------------- lifecycle


def post(client: TestClient, w: World, serial: str, action: str, body: Any = None) -> Any:
    return client.post(f"/v1/batteries/{serial}/{action}", json=body, headers=w.op)


def test_quarantine_release_retire_walk_the_lifecycle(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.station, 1)
    )
    serial = battery.serial

    response = post(client, world, serial, "quarantine", {"reason": "swollen cell"})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "quarantined"
    assert_problem(
        post(client, world, serial, "quarantine", {"reason": "again"}),
        409,
        "InvalidStateTransition",
    )

    assert post(client, world, serial, "release").json()["state"] == "in_service"
    assert_problem(post(client, world, serial, "release"), 409, "InvalidStateTransition")

    # Retiring does not move the battery: it has to leave the slot first.
    assert_problem(
        post(client, world, serial, "retire", {"note": "end of life"}), 409, "BatteryInUse"
    )
    assert (
        move(client, world.op, serial, {"kind": "warehouse", "note": "scrap cage"}).status_code
        == 200
    )
    retired = post(client, world, serial, "retire", {"note": "end of life"})
    assert retired.status_code == 200, retired.text
    assert retired.json()["state"] == "retired"
    assert retired.json()["location"]["note"] == "scrap cage"

    for action, body in (("retire", None), ("quarantine", {"reason": "x"}), ("release", None)):
        assert_problem(post(client, world, serial, action, body), 409, "InvalidStateTransition")

    events = history(client, world, serial)
    assert [(e["cause"], e["state_from"], e["state_to"]) for e in events] == [
        ("registered", None, "in_service"),
        ("quarantine", "in_service", "quarantined"),
        ("release", "quarantined", "in_service"),
        ("manual_move", "in_service", "in_service"),
        ("retire", "in_service", "retired"),
    ]
    assert events[1]["note"] == "swollen cell"
    assert events[4]["note"] == "end of life"


def test_quarantined_battery_can_be_retired_directly(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(session, world.pack, world.owner, state=BatteryState.quarantined)
    assert post(client, world, battery.serial, "retire").json()["state"] == "retired"


def test_quarantine_requires_a_reason(client: TestClient, session: Session, world: World) -> None:
    battery = make_battery(session, world.pack, world.owner)
    assert_problem(post(client, world, battery.serial, "quarantine"), 422, "ValidationError")
    assert_problem(
        post(client, world, battery.serial, "quarantine", {"reason": ""}), 422, "ValidationError"
    )


def test_operator_cannot_change_state_of_battery_at_another_operators_station(
    client: TestClient, session: Session, world: World
) -> None:
    foreign = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.other_station, 1)
    )
    response = post(client, world, foreign.serial, "quarantine", {"reason": "looks odd"})
    assert_problem(response, 403, "BatteryOutOfScope")
    response = client.post(
        f"/v1/batteries/{foreign.serial}/quarantine", json={"reason": "x"}, headers=world.admin
    )
    assert response.status_code == 200


# ---------------------------------------------------------------- patch


def test_admin_patches_owner_oem_and_date_and_null_oem_detaches(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(session, world.pack, world.owner, oem=world.oem)
    new_owner = make_org(session, OrgRole.owner)
    url = f"/v1/batteries/{battery.serial}"
    response = client.patch(
        url,
        json={
            "owner_code": new_owner.code,
            "oem_code": world.other_oem.code,
            "manufactured_on": "2024-12-31",
        },
        headers=world.admin,
    )
    assert response.status_code == 200, response.text
    assert response.json()["owner_code"] == new_owner.code
    assert response.json()["oem_code"] == world.other_oem.code
    assert response.json()["manufactured_on"] == "2024-12-31"

    response = client.patch(url, json={"oem_code": None}, headers=world.admin)
    assert response.json()["oem_code"] is None
    assert response.json()["owner_code"] == new_owner.code  # fields not sent stay


def test_operator_patches_date_but_not_owner_or_oem(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(
        session, world.pack, world.owner, slot=slot_of(session, world.station, 1)
    )
    url = f"/v1/batteries/{battery.serial}"
    assert (
        client.patch(url, json={"manufactured_on": "2024-01-02"}, headers=world.op).status_code
        == 200
    )
    assert_problem(
        client.patch(url, json={"owner_code": world.owner.code}, headers=world.op),
        403,
        "AdminOnlyField",
    )
    assert_problem(
        client.patch(url, json={"oem_code": None}, headers=world.op), 403, "AdminOnlyField"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"owner_code": None},
        {"state": "retired"},
        {"location": {"kind": "warehouse"}},
        {"manufactured_on": "soon"},
    ],
)
def test_patch_with_bad_body_is_422(
    client: TestClient, session: Session, world: World, body: dict[str, Any]
) -> None:
    battery = make_battery(session, world.pack, world.owner)
    response = client.patch(f"/v1/batteries/{battery.serial}", json=body, headers=world.admin)
    assert_problem(response, 422, "ValidationError")


def test_patch_with_oem_code_of_non_oem_is_422(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(session, world.pack, world.owner)
    response = client.patch(
        f"/v1/batteries/{battery.serial}",
        json={"oem_code": world.operator.code},
        headers=world.admin,
    )
    assert_problem(response, 422, "OrganizationRoleMismatch")


# ---------------------------------------------------------------- history


def test_history_pages_oldest_first(client: TestClient, session: Session, world: World) -> None:
    battery = make_battery(session, world.pack, world.owner)
    for number in (1, 2, 3, 4):
        assert (
            move(client, world.admin, battery.serial, slot_place(world.station, number)).status_code
            == 200
        )
    seen: list[tuple[str, int | None]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = client.get(
            f"/v1/batteries/{battery.serial}/history", params=params, headers=world.admin
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= 2
        seen += [(e["cause"], e["to_location"]["slot_number"]) for e in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [
        ("registered", None),
        ("manual_move", 1),
        ("manual_move", 2),
        ("manual_move", 3),
        ("manual_move", 4),
    ]


def test_history_with_forged_cursor_is_422(
    client: TestClient, session: Session, world: World
) -> None:
    battery = make_battery(session, world.pack, world.owner)
    for cursor in (encode_cursor("not a date", 1), encode_cursor("x"), "%%%"):
        response = client.get(
            f"/v1/batteries/{battery.serial}/history",
            params={"cursor": cursor},
            headers=world.admin,
        )
        assert_problem(response, 422, "InvalidCursor")
