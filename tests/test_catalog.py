import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import KeyRole, OrgRole
from tests.fixtures.factories import (
    assert_problem,
    auth,
    make_key,
    make_org,
    make_pack_type,
    make_vehicle_model,
    unique,
    walk_pages,
)


@pytest.fixture
def admin(session: Session) -> dict[str, str]:
    return auth(make_key(session, KeyRole.admin))


def pack_body(code: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "code": code,
        "name": "Heavy LFP",
        "chemistry": "LFP",
        "nominal_energy_kwh": 282.0,
        "nominal_capacity_ah": 560.0,
        "nominal_voltage_v": 512.0,
    }
    body.update(overrides)
    return body


# --- pack types -------------------------------------------------------------------------


def test_admin_creates_a_pack_type_and_every_key_reads_it(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    code = unique("HD-LFP-")
    created = client.post("/v1/pack-types", headers=admin, json=pack_body(code))
    assert created.status_code == 201, created.text
    assert created.json()["nominal_energy_kwh"] == 282.0
    operator = auth(make_key(session, KeyRole.operator, make_org(session, OrgRole.operator)))
    oem = auth(make_key(session, KeyRole.oem, make_org(session, OrgRole.oem)))
    for key in (admin, operator, oem):
        read = client.get(f"/v1/pack-types/{code}", headers=key)
        assert read.status_code == 200
        assert read.json()["chemistry"] == "LFP"
        # The largest page: other tests commit pack types of their own too.
        listed = client.get("/v1/pack-types", headers=key, params={"limit": 500})
        assert code in [p["code"] for p in listed.json()["items"]]


def test_duplicate_pack_type_is_409(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    pack = make_pack_type(session)
    response = client.post("/v1/pack-types", headers=admin, json=pack_body(pack.code))
    assert_problem(response, 409, "PackTypeExists")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nominal_energy_kwh", 0),
        ("nominal_capacity_ah", -1),
        ("nominal_voltage_v", 2_000_000),
        ("chemistry", ""),
        ("code", "bad code"),
    ],
)
def test_invalid_pack_type_is_422_naming_the_field(
    client: TestClient, admin: dict[str, str], field: str, value: object
) -> None:
    body = pack_body(unique("P"))
    body[field] = value
    response = client.post("/v1/pack-types", headers=admin, json=body)
    problem = assert_problem(response, 422, "ValidationError")
    assert f"body.{field}" in str(problem["detail"])


@pytest.mark.parametrize("role", [OrgRole.operator, OrgRole.oem])
def test_scoped_keys_cannot_write_pack_types(
    client: TestClient, session: Session, role: OrgRole
) -> None:
    pack = make_pack_type(session)
    key = auth(make_key(session, KeyRole(role.value), make_org(session, role)))
    created = client.post("/v1/pack-types", headers=key, json=pack_body(unique("P")))
    assert_problem(created, 403, "Forbidden")
    patched = client.patch(f"/v1/pack-types/{pack.code}", headers=key, json={"name": "x"})
    assert_problem(patched, 403, "Forbidden")


def test_pack_type_routes_need_a_key(client: TestClient, session: Session) -> None:
    pack = make_pack_type(session)
    assert_problem(client.get("/v1/pack-types"), 401, "Unauthorized")
    assert_problem(client.get(f"/v1/pack-types/{pack.code}"), 401, "Unauthorized")


def test_unknown_pack_type_is_404(client: TestClient, admin: dict[str, str]) -> None:
    assert_problem(client.get("/v1/pack-types/NOPE", headers=admin), 404, "PackTypeNotFound")
    patched = client.patch("/v1/pack-types/NOPE", headers=admin, json={"name": "x"})
    assert_problem(patched, 404, "PackTypeNotFound")


def test_pack_type_patch_changes_only_the_given_fields(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    pack = make_pack_type(session, energy_kwh=141.0)
    response = client.patch(
        f"/v1/pack-types/{pack.code}", headers=admin, json={"nominal_energy_kwh": 150.5}
    )
    assert response.status_code == 200, response.text
    assert response.json()["nominal_energy_kwh"] == 150.5
    assert response.json()["nominal_voltage_v"] == 512.0
    assert response.json()["name"] == "Test pack"


def test_pack_type_patch_rejects_null_and_non_positive_values(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    pack = make_pack_type(session)
    null = client.patch(f"/v1/pack-types/{pack.code}", headers=admin, json={"chemistry": None})
    assert "body.chemistry" in str(assert_problem(null, 422, "ValidationError")["detail"])
    zero = client.patch(f"/v1/pack-types/{pack.code}", headers=admin, json={"nominal_voltage_v": 0})
    assert_problem(zero, 422, "ValidationError")


def test_pack_types_filter_by_chemistry_and_paginate(
    client: TestClient, admin: dict[str, str]
) -> None:
    nmc = set()
    for i in range(5):
        code = unique("PT-")
        chemistry = "NMC" if i % 2 == 0 else "LFP"
        response = client.post(
            "/v1/pack-types", headers=admin, json=pack_body(code, chemistry=chemistry)
        )
        assert response.status_code == 201
        if chemistry == "NMC":
            nmc.add(code)
    codes = walk_pages(
        client, "/v1/pack-types", admin, limit=1, key="code", filters={"chemistry": "NMC"}
    )
    assert set(codes) == nmc
    assert codes == sorted(codes)


# --- vehicle models ---------------------------------------------------------------------


def model_body(code: str, oem_code: str, *packs: str) -> dict[str, object]:
    return {"code": code, "name": "Tractor", "oem_code": oem_code, "pack_type_codes": list(packs)}


def test_admin_creates_a_vehicle_model_with_its_pack_types(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    oem = make_org(session, OrgRole.oem)
    a, b = make_pack_type(session), make_pack_type(session)
    code = unique("HT-")
    response = client.post(
        "/v1/vehicle-models",
        headers=admin,
        json=model_body(code, oem.code, b.code, a.code, b.code),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["oem_code"] == oem.code
    assert body["pack_type_codes"] == sorted([a.code, b.code])
    read = client.get(f"/v1/vehicle-models/{code}", headers=admin)
    assert read.json()["pack_type_codes"] == sorted([a.code, b.code])


def test_vehicle_model_with_unknown_oem_is_422(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    pack = make_pack_type(session)
    response = client.post(
        "/v1/vehicle-models", headers=admin, json=model_body(unique("M"), "GHOST", pack.code)
    )
    body = assert_problem(response, 422, "UnknownOrganization")
    assert "oem_code" in str(body["detail"])
    assert "GHOST" in str(body["detail"])


def test_vehicle_model_whose_oem_is_not_an_oem_is_422(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    operator = make_org(session, OrgRole.operator)
    pack = make_pack_type(session)
    response = client.post(
        "/v1/vehicle-models", headers=admin, json=model_body(unique("M"), operator.code, pack.code)
    )
    body = assert_problem(response, 422, "OrganizationRoleMismatch")
    assert "expected oem" in str(body["detail"])


def test_vehicle_model_with_unknown_pack_types_names_every_missing_one(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    oem = make_org(session, OrgRole.oem)
    pack = make_pack_type(session)
    response = client.post(
        "/v1/vehicle-models",
        headers=admin,
        json=model_body(unique("M"), oem.code, pack.code, "MISSING-1", "MISSING-2"),
    )
    detail = str(assert_problem(response, 422, "UnknownPackType")["detail"])
    assert "MISSING-1" in detail
    assert "MISSING-2" in detail
    assert pack.code not in detail


def test_vehicle_model_needs_at_least_one_pack_type(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    oem = make_org(session, OrgRole.oem)
    response = client.post("/v1/vehicle-models", headers=admin, json=model_body("M1", oem.code))
    body = assert_problem(response, 422, "ValidationError")
    assert "body.pack_type_codes" in str(body["detail"])


def test_duplicate_vehicle_model_is_409(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    oem = make_org(session, OrgRole.oem)
    pack = make_pack_type(session)
    model = make_vehicle_model(session, oem, pack)
    response = client.post(
        "/v1/vehicle-models", headers=admin, json=model_body(model.code, oem.code, pack.code)
    )
    assert_problem(response, 409, "VehicleModelExists")


@pytest.mark.parametrize("role", [OrgRole.operator, OrgRole.oem])
def test_scoped_keys_cannot_write_vehicle_models_even_their_own(
    client: TestClient, session: Session, role: OrgRole
) -> None:
    org = make_org(session, role)
    oem = org if role is OrgRole.oem else make_org(session, OrgRole.oem)
    pack = make_pack_type(session)
    model = make_vehicle_model(session, oem, pack)
    key = auth(make_key(session, KeyRole(role.value), org))
    created = client.post(
        "/v1/vehicle-models", headers=key, json=model_body(unique("M"), oem.code, pack.code)
    )
    assert_problem(created, 403, "Forbidden")
    patched = client.patch(f"/v1/vehicle-models/{model.code}", headers=key, json={"name": "x"})
    assert_problem(patched, 403, "Forbidden")


def test_oem_key_sees_only_its_own_vehicle_models(client: TestClient, session: Session) -> None:
    mine, theirs = make_org(session, OrgRole.oem), make_org(session, OrgRole.oem)
    pack = make_pack_type(session)
    my_model = make_vehicle_model(session, mine, pack)
    their_model = make_vehicle_model(session, theirs, pack)
    key = auth(make_key(session, KeyRole.oem, mine))
    assert client.get(f"/v1/vehicle-models/{my_model.code}", headers=key).status_code == 200
    hidden = client.get(f"/v1/vehicle-models/{their_model.code}", headers=key)
    assert_problem(hidden, 404, "VehicleModelNotFound")
    listed = client.get("/v1/vehicle-models", headers=key)
    assert [m["code"] for m in listed.json()["items"]] == [my_model.code]
    asked_for_theirs = client.get(
        "/v1/vehicle-models", headers=key, params={"oem_code": theirs.code}
    )
    assert asked_for_theirs.json()["items"] == []


def test_operator_key_reads_every_oems_vehicle_models(client: TestClient, session: Session) -> None:
    pack = make_pack_type(session)
    models = {make_vehicle_model(session, make_org(session, OrgRole.oem), pack).code for _ in "ab"}
    key = auth(make_key(session, KeyRole.operator, make_org(session, OrgRole.operator)))
    listed = client.get("/v1/vehicle-models", headers=key, params={"limit": 500})
    assert models <= {m["code"] for m in listed.json()["items"]}
    for code in models:
        assert client.get(f"/v1/vehicle-models/{code}", headers=key).status_code == 200


def test_vehicle_models_filter_by_oem_and_pack_type(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    oem_a, oem_b = make_org(session, OrgRole.oem), make_org(session, OrgRole.oem)
    small, large = make_pack_type(session), make_pack_type(session)
    a_small = make_vehicle_model(session, oem_a, small)
    a_both = make_vehicle_model(session, oem_a, small, large)
    b_large = make_vehicle_model(session, oem_b, large)

    def codes(**params: str) -> set[str]:
        response = client.get("/v1/vehicle-models", headers=admin, params=params)
        assert response.status_code == 200
        return {m["code"] for m in response.json()["items"]}

    assert codes(oem_code=oem_a.code) == {a_small.code, a_both.code}
    assert codes(pack_type_code=large.code) == {a_both.code, b_large.code}
    assert codes(oem_code=oem_a.code, pack_type_code=large.code) == {a_both.code}
    assert codes(oem_code="NO-SUCH-OEM") == set()


def test_vehicle_model_cursor_walks_every_page_once(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    oem = make_org(session, OrgRole.oem)
    pack = make_pack_type(session)
    created = {make_vehicle_model(session, oem, pack).code for _ in range(5)}
    codes = walk_pages(
        client, "/v1/vehicle-models", admin, limit=2, key="code", filters={"oem_code": oem.code}
    )
    assert set(codes) == created
    assert len(codes) == len(created)


def test_admin_replaces_a_models_pack_types_and_renames_it(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    oem = make_org(session, OrgRole.oem)
    old, new = make_pack_type(session), make_pack_type(session)
    model = make_vehicle_model(session, oem, old)
    response = client.patch(
        f"/v1/vehicle-models/{model.code}",
        headers=admin,
        json={"pack_type_codes": [new.code], "name": "Tractor LR"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["pack_type_codes"] == [new.code]
    assert response.json()["name"] == "Tractor LR"
    assert response.json()["oem_code"] == oem.code


def test_vehicle_model_patch_rejects_unknown_pack_types_oem_change_and_unknown_model(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    oem = make_org(session, OrgRole.oem)
    pack = make_pack_type(session)
    model = make_vehicle_model(session, oem, pack)
    unknown_pack = client.patch(
        f"/v1/vehicle-models/{model.code}", headers=admin, json={"pack_type_codes": ["ZZZ"]}
    )
    assert_problem(unknown_pack, 422, "UnknownPackType")
    oem_change = client.patch(
        f"/v1/vehicle-models/{model.code}",
        headers=admin,
        json={"oem_code": make_org(session, OrgRole.oem).code},
    )
    assert_problem(oem_change, 422, "ValidationError")
    unknown_model = client.patch("/v1/vehicle-models/NOPE", headers=admin, json={"name": "x"})
    assert_problem(unknown_model, 404, "VehicleModelNotFound")
    unchanged = client.get(f"/v1/vehicle-models/{model.code}", headers=admin)
    assert unchanged.json()["pack_type_codes"] == [pack.code]


def test_vehicle_model_routes_need_a_key(client: TestClient) -> None:
    assert_problem(client.get("/v1/vehicle-models"), 401, "Unauthorized")
    assert_problem(client.get("/v1/vehicle-models/X"), 401, "Unauthorized")
