import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import KeyRole, Organization, OrgRole, PackType, VehicleModel
from app.vehicles import repository as vehicle_repository
from tests.fixtures.factories import (
    assert_problem,
    auth,
    make_battery,
    make_key,
    make_org,
    make_pack_type,
    make_vehicle,
    make_vehicle_model,
    unique_vin,
    walk_pages,
)


@pytest.fixture
def admin(session: Session) -> dict[str, str]:
    return auth(make_key(session, KeyRole.admin))


@pytest.fixture
def operator_key(session: Session) -> dict[str, str]:
    return auth(make_key(session, KeyRole.operator, make_org(session, OrgRole.operator)))


@pytest.fixture
def oem(session: Session) -> Organization:
    return make_org(session, OrgRole.oem)


@pytest.fixture
def oem_key(session: Session, oem: Organization) -> dict[str, str]:
    return auth(make_key(session, KeyRole.oem, oem))


@pytest.fixture
def pack(session: Session) -> PackType:
    return make_pack_type(session)


@pytest.fixture
def model(session: Session, oem: Organization, pack: PackType) -> VehicleModel:
    return make_vehicle_model(session, oem, pack)


# --- create -----------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["admin", "operator_key"])
def test_admin_and_operator_register_a_vehicle_whose_oem_follows_the_model(
    client: TestClient,
    request: pytest.FixtureRequest,
    writer: str,
    oem: Organization,
    model: VehicleModel,
) -> None:
    key = request.getfixturevalue(writer)
    vin = unique_vin()
    response = client.post("/v1/vehicles", headers=key, json={"vin": vin, "model_code": model.code})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["vin"] == vin
    assert body["oem_code"] == oem.code
    assert body["model_code"] == model.code
    assert body["installed_battery_serial"] is None
    assert client.get(f"/v1/vehicles/{vin}", headers=key).json()["oem_code"] == oem.code


def test_oem_key_cannot_register_vehicles_even_its_own(
    client: TestClient, oem_key: dict[str, str], model: VehicleModel
) -> None:
    response = client.post(
        "/v1/vehicles", headers=oem_key, json={"vin": unique_vin(), "model_code": model.code}
    )
    assert_problem(response, 403, "Forbidden")


@pytest.mark.parametrize(
    ("vin", "fragment"),
    [
        ("LSFAB1234CZ90001", "a VIN has 17 characters, this one has 16"),
        ("LSFAB1234CZ9000001", "a VIN has 17 characters, this one has 18"),
        ("LSFAB1234CZI00001", "not allowed: 'I'"),
        ("LSFOB1234CZQ00001", "not allowed: 'O', 'Q'"),
        ("lsfab1234cz900001", "not allowed: 'a', 'b', 'c', 'f', 'l', 's', 'z'"),
        ("LSFAB1234CZ9-0001", "not allowed: '-'"),
    ],
)
def test_malformed_vin_is_422_saying_what_is_wrong(
    client: TestClient, operator_key: dict[str, str], model: VehicleModel, vin: str, fragment: str
) -> None:
    response = client.post(
        "/v1/vehicles", headers=operator_key, json={"vin": vin, "model_code": model.code}
    )
    detail = str(assert_problem(response, 422, "ValidationError")["detail"])
    assert "body.vin" in detail
    assert fragment in detail


def test_vehicle_with_unknown_model_is_422(
    client: TestClient, operator_key: dict[str, str]
) -> None:
    response = client.post(
        "/v1/vehicles", headers=operator_key, json={"vin": unique_vin(), "model_code": "GHOST"}
    )
    detail = str(assert_problem(response, 422, "UnknownVehicleModel")["detail"])
    assert "model_code" in detail
    assert "GHOST" in detail


def test_duplicate_vin_is_409(
    client: TestClient, operator_key: dict[str, str], model: VehicleModel
) -> None:
    body = {"vin": unique_vin(), "model_code": model.code}
    assert client.post("/v1/vehicles", headers=operator_key, json=body).status_code == 201
    again = client.post("/v1/vehicles", headers=operator_key, json=body)
    assert_problem(again, 409, "VehicleExists")


def test_vin_unique_violation_on_flush_is_409_not_500(
    client: TestClient,
    operator_key: dict[str, str],
    model: VehicleModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = {"vin": unique_vin(), "model_code": model.code}
    assert client.post("/v1/vehicles", headers=operator_key, json=body).status_code == 201
    # As if the same VIN were registered concurrently after our check.
    monkeypatch.setattr(vehicle_repository, "get_vehicle", lambda *_: None)
    again = client.post("/v1/vehicles", headers=operator_key, json=body)
    assert_problem(again, 409, "VehicleExists")


# --- read, list, isolation --------------------------------------------------------------


def test_vehicle_shows_the_battery_it_carries(
    client: TestClient,
    session: Session,
    operator_key: dict[str, str],
    oem: Organization,
    pack: PackType,
    model: VehicleModel,
) -> None:
    vehicle = make_vehicle(session, model)
    battery = make_battery(
        session, pack, make_org(session, OrgRole.owner), oem=oem, vehicle=vehicle
    )
    response = client.get(f"/v1/vehicles/{vehicle.vin}", headers=operator_key)
    assert response.status_code == 200
    assert response.json()["installed_battery_serial"] == battery.serial
    # Filtered to this test's model: other tests (ingest, simulator) commit vehicles too.
    listed = client.get(
        "/v1/vehicles", params={"model_code": model.code}, headers=operator_key
    ).json()["items"]
    assert {v["vin"]: v["installed_battery_serial"] for v in listed} == {
        vehicle.vin: battery.serial
    }


def test_vehicle_routes_need_a_key(
    client: TestClient, session: Session, model: VehicleModel
) -> None:
    vehicle = make_vehicle(session, model)
    assert_problem(client.get("/v1/vehicles"), 401, "Unauthorized")
    assert_problem(client.get(f"/v1/vehicles/{vehicle.vin}"), 401, "Unauthorized")
    assert_problem(client.post("/v1/vehicles", json={}), 401, "Unauthorized")
    assert_problem(client.patch(f"/v1/vehicles/{vehicle.vin}", json={}), 401, "Unauthorized")


def test_oem_key_sees_only_its_own_vehicles(
    client: TestClient,
    session: Session,
    oem_key: dict[str, str],
    model: VehicleModel,
    pack: PackType,
) -> None:
    mine = make_vehicle(session, model)
    rival = make_org(session, OrgRole.oem)
    theirs = make_vehicle(session, make_vehicle_model(session, rival, pack))
    assert client.get(f"/v1/vehicles/{mine.vin}", headers=oem_key).status_code == 200
    hidden = client.get(f"/v1/vehicles/{theirs.vin}", headers=oem_key)
    body = assert_problem(hidden, 404, "VehicleNotFound")
    assert body["detail"] == f"vehicle {theirs.vin!r} not found"
    listed = client.get("/v1/vehicles", headers=oem_key).json()
    assert [v["vin"] for v in listed["items"]] == [mine.vin]
    asked_for_rival = client.get("/v1/vehicles", headers=oem_key, params={"oem_code": rival.code})
    assert asked_for_rival.json()["items"] == []


def test_oem_key_cannot_change_vehicles(
    client: TestClient,
    session: Session,
    oem: Organization,
    oem_key: dict[str, str],
    model: VehicleModel,
    pack: PackType,
) -> None:
    vehicle = make_vehicle(session, model)
    other_model = make_vehicle_model(session, oem, pack)
    response = client.patch(
        f"/v1/vehicles/{vehicle.vin}", headers=oem_key, json={"model_code": other_model.code}
    )
    assert_problem(response, 403, "Forbidden")
    session.refresh(vehicle)
    assert vehicle.model_id == model.id


def test_operator_reads_every_oems_vehicles(
    client: TestClient, session: Session, operator_key: dict[str, str], pack: PackType
) -> None:
    oems = [make_org(session, OrgRole.oem) for _ in range(3)]
    vins = {make_vehicle(session, make_vehicle_model(session, oem, pack)).vin for oem in oems}
    # Per OEM: other tests (ingest, simulator) commit vehicles of their own OEMs.
    listed = {
        v["vin"]
        for oem in oems
        for v in client.get(
            "/v1/vehicles", params={"oem_code": oem.code}, headers=operator_key
        ).json()["items"]
    }
    assert listed == vins
    for vin in vins:
        assert client.get(f"/v1/vehicles/{vin}", headers=operator_key).status_code == 200


def test_vehicles_filter_by_oem_and_model(
    client: TestClient,
    session: Session,
    admin: dict[str, str],
    oem: Organization,
    model: VehicleModel,
    pack: PackType,
) -> None:
    second_model = make_vehicle_model(session, oem, pack)
    rival = make_org(session, OrgRole.oem)
    a = make_vehicle(session, model)
    b = make_vehicle(session, second_model)
    c = make_vehicle(session, make_vehicle_model(session, rival, pack))

    def vins(**params: str) -> set[str]:
        response = client.get("/v1/vehicles", headers=admin, params=params)
        assert response.status_code == 200, response.text
        return {v["vin"] for v in response.json()["items"]}

    assert vins(oem_code=oem.code) == {a.vin, b.vin}
    assert vins(model_code=second_model.code) == {b.vin}
    assert vins(oem_code=rival.code) == {c.vin}
    assert vins(oem_code=rival.code, model_code=model.code) == set()


def test_vehicle_cursor_walks_every_page_once(
    client: TestClient, session: Session, admin: dict[str, str], model: VehicleModel
) -> None:
    created = {make_vehicle(session, model).vin for _ in range(7)}
    vins = walk_pages(
        client, "/v1/vehicles", admin, limit=2, key="vin", filters={"model_code": model.code}
    )
    assert set(vins) == created
    assert len(vins) == 7
    assert vins == sorted(vins)


def test_unknown_vehicle_is_404(client: TestClient, admin: dict[str, str]) -> None:
    assert_problem(
        client.get("/v1/vehicles/LSFAB1234CZ999999", headers=admin), 404, "VehicleNotFound"
    )
    patched = client.patch(
        "/v1/vehicles/LSFAB1234CZ999999", headers=admin, json={"model_code": "X"}
    )
    assert_problem(patched, 404, "VehicleNotFound")


# --- update -----------------------------------------------------------------------------


def test_operator_changes_a_vehicles_model_within_its_oem(
    client: TestClient,
    session: Session,
    operator_key: dict[str, str],
    oem: Organization,
    model: VehicleModel,
    pack: PackType,
) -> None:
    vehicle = make_vehicle(session, model)
    make_battery(session, pack, make_org(session, OrgRole.owner), vehicle=vehicle)
    long_range = make_vehicle_model(session, oem, pack, make_pack_type(session))
    response = client.patch(
        f"/v1/vehicles/{vehicle.vin}", headers=operator_key, json={"model_code": long_range.code}
    )
    assert response.status_code == 200, response.text
    assert response.json()["model_code"] == long_range.code
    assert response.json()["oem_code"] == oem.code
    assert response.json()["installed_battery_serial"] is not None


def test_vehicle_cannot_move_to_another_oems_model(
    client: TestClient,
    session: Session,
    operator_key: dict[str, str],
    model: VehicleModel,
    pack: PackType,
) -> None:
    vehicle = make_vehicle(session, model)
    foreign = make_vehicle_model(session, make_org(session, OrgRole.oem), pack)
    response = client.patch(
        f"/v1/vehicles/{vehicle.vin}", headers=operator_key, json={"model_code": foreign.code}
    )
    assert_problem(response, 422, "ModelOemMismatch")


def test_vehicle_cannot_move_to_a_model_that_does_not_take_its_battery(
    client: TestClient,
    session: Session,
    operator_key: dict[str, str],
    oem: Organization,
    model: VehicleModel,
    pack: PackType,
) -> None:
    vehicle = make_vehicle(session, model)
    battery = make_battery(session, pack, make_org(session, OrgRole.owner), vehicle=vehicle)
    other_pack_model = make_vehicle_model(session, oem, make_pack_type(session))
    response = client.patch(
        f"/v1/vehicles/{vehicle.vin}",
        headers=operator_key,
        json={"model_code": other_pack_model.code},
    )
    detail = str(assert_problem(response, 409, "InstalledBatteryIncompatible")["detail"])
    assert battery.serial in detail


def test_empty_vehicle_may_move_to_a_model_with_other_pack_types(
    client: TestClient,
    session: Session,
    operator_key: dict[str, str],
    oem: Organization,
    model: VehicleModel,
) -> None:
    vehicle = make_vehicle(session, model)
    other_pack_model = make_vehicle_model(session, oem, make_pack_type(session))
    response = client.patch(
        f"/v1/vehicles/{vehicle.vin}",
        headers=operator_key,
        json={"model_code": other_pack_model.code},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("patch", "code", "fragment"),
    [
        ({"model_code": "GHOST"}, "UnknownVehicleModel", "'GHOST' does not exist"),
        ({"model_code": None}, "ValidationError", "may be omitted but not null"),
        ({"vin": "LSFAB1234CZ900009"}, "ValidationError", "Extra inputs are not permitted"),
        ({"oem_code": "x"}, "ValidationError", "Extra inputs are not permitted"),
    ],
)
def test_invalid_vehicle_patch_is_422(
    client: TestClient,
    session: Session,
    operator_key: dict[str, str],
    model: VehicleModel,
    patch: dict[str, object],
    code: str,
    fragment: str,
) -> None:
    vehicle = make_vehicle(session, model)
    response = client.patch(f"/v1/vehicles/{vehicle.vin}", headers=operator_key, json=patch)
    assert fragment in str(assert_problem(response, 422, code)["detail"])
