import pytest
from app.core.errors import Conflict
from app.core.integrity import flush_or_raise
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import KeyRole, Organization, OrgRole
from app.organizations import repository as organization_repository
from tests.fixtures.factories import assert_problem, auth, make_key, make_org, unique, walk_pages


@pytest.fixture
def admin(session: Session) -> dict[str, str]:
    return auth(make_key(session, KeyRole.admin))


def test_admin_creates_and_reads_an_organization(client: TestClient, admin: dict[str, str]) -> None:
    code = unique("acme-")
    response = client.post(
        "/v1/organizations",
        headers=admin,
        json={"code": code, "name": "Acme Swaps", "role": "operator"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["code"] == code
    assert response.json()["role"] == "operator"
    read = client.get(f"/v1/organizations/{code}", headers=admin)
    assert read.status_code == 200
    assert read.json()["name"] == "Acme Swaps"


def test_duplicate_organization_code_is_409(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    org = make_org(session)
    response = client.post(
        "/v1/organizations", headers=admin, json={"code": org.code, "name": "x", "role": "oem"}
    )
    body = assert_problem(response, 409, "OrganizationExists")
    assert org.code in str(body["detail"])


def test_unique_violation_on_flush_becomes_409_not_500(
    client: TestClient,
    session: Session,
    admin: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org = make_org(session)
    # Simulate a concurrent insert landing between the service's check and its insert:
    # the check sees nothing, the database's unique constraint still refuses the row.
    monkeypatch.setattr(organization_repository, "get_by_code", lambda *_: None)
    response = client.post(
        "/v1/organizations", headers=admin, json={"code": org.code, "name": "x", "role": "oem"}
    )
    assert_problem(response, 409, "OrganizationExists")


def test_flush_or_raise_turns_a_real_unique_violation_into_the_given_error(
    session: Session,
) -> None:
    org = make_org(session)
    nested = session.begin_nested()
    session.add(Organization(code=org.code, name="dup", role=OrgRole.oem))
    with pytest.raises(Conflict, match="taken"):
        flush_or_raise(session, Conflict("taken"))
    nested.rollback()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"code": "-starts-with-dash", "name": "x", "role": "oem"}, "code"),
        ({"code": "has space", "name": "x", "role": "oem"}, "code"),
        ({"code": "x" * 65, "name": "x", "role": "oem"}, "code"),
        ({"code": "ok", "name": "", "role": "oem"}, "name"),
        ({"code": "ok", "name": "x", "role": "admin"}, "role"),
        ({"code": "ok", "name": "x"}, "role"),
    ],
)
def test_invalid_organization_body_is_422_naming_the_field(
    client: TestClient, admin: dict[str, str], payload: dict[str, str], field: str
) -> None:
    response = client.post("/v1/organizations", headers=admin, json=payload)
    body = assert_problem(response, 422, "ValidationError")
    assert f"body.{field}" in str(body["detail"])


def test_organization_routes_need_a_key(client: TestClient, session: Session) -> None:
    org = make_org(session)
    assert_problem(client.get("/v1/organizations"), 401, "Unauthorized")
    assert_problem(client.get(f"/v1/organizations/{org.code}"), 401, "Unauthorized")
    assert_problem(
        client.post("/v1/organizations", json={"code": "a", "name": "b", "role": "oem"}),
        401,
        "Unauthorized",
    )
    assert_problem(
        client.get("/v1/organizations", headers=auth("sfk_not-a-real-key")), 401, "Unauthorized"
    )


@pytest.mark.parametrize("role", [OrgRole.operator, OrgRole.oem])
def test_scoped_keys_cannot_create_or_rename_organizations(
    client: TestClient, session: Session, role: OrgRole
) -> None:
    org = make_org(session, role)
    key = auth(make_key(session, KeyRole(role.value), org))
    created = client.post(
        "/v1/organizations", headers=key, json={"code": unique("x"), "name": "b", "role": "oem"}
    )
    assert_problem(created, 403, "Forbidden")
    renamed = client.patch(f"/v1/organizations/{org.code}", headers=key, json={"name": "Mine"})
    assert_problem(renamed, 403, "Forbidden")


@pytest.mark.parametrize("role", [OrgRole.operator, OrgRole.oem])
def test_scoped_key_reads_its_own_organization_but_not_others(
    client: TestClient, session: Session, role: OrgRole
) -> None:
    own = make_org(session, role)
    other_same_role = make_org(session, role)
    other_role = make_org(session, OrgRole.oem if role is OrgRole.operator else OrgRole.operator)
    key = auth(make_key(session, KeyRole(role.value), own))
    assert client.get(f"/v1/organizations/{own.code}", headers=key).status_code == 200
    for other in (other_same_role, other_role):
        response = client.get(f"/v1/organizations/{other.code}", headers=key)
        assert_problem(response, 404, "OrganizationNotFound")


@pytest.mark.parametrize("role", [OrgRole.operator, OrgRole.oem])
def test_scoped_key_lists_only_its_own_organization(
    client: TestClient, session: Session, role: OrgRole
) -> None:
    own = make_org(session, role)
    make_org(session, role)
    make_org(session, OrgRole.owner)
    key = auth(make_key(session, KeyRole(role.value), own))
    response = client.get("/v1/organizations", headers=key)
    assert response.status_code == 200
    assert [o["code"] for o in response.json()["items"]] == [own.code]
    filtered_away = client.get("/v1/organizations", headers=key, params={"role": "owner"})
    assert filtered_away.json()["items"] == []


def test_admin_lists_organizations_filtered_by_role(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    operators = {make_org(session, OrgRole.operator).code for _ in range(2)}
    oems = {make_org(session, OrgRole.oem).code for _ in range(3)}
    response = client.get("/v1/organizations", headers=admin, params={"role": "oem"})
    assert response.status_code == 200
    codes = {o["code"] for o in response.json()["items"]}
    assert oems <= codes
    assert not operators & codes
    assert all(o["role"] == "oem" for o in response.json()["items"])


def test_organization_cursor_walks_every_page_once_in_code_order(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    created = {make_org(session, OrgRole.owner).code for _ in range(7)}
    make_org(session, OrgRole.oem)
    codes = walk_pages(
        client, "/v1/organizations", admin, limit=2, key="code", filters={"role": "owner"}
    )
    assert set(codes) == created
    assert codes == sorted(codes)


def test_invalid_cursor_and_page_size_are_422(client: TestClient, admin: dict[str, str]) -> None:
    bad_cursor = client.get("/v1/organizations", headers=admin, params={"cursor": "!!garbage"})
    assert_problem(bad_cursor, 422, "InvalidCursor")
    wrong_type = client.get(
        "/v1/organizations",
        headers=admin,
        params={"cursor": "WzFd"},  # base64 of [1]: a well-formed cursor of the wrong key type
    )
    assert_problem(wrong_type, 422, "InvalidCursor")
    for limit in (0, 501):
        response = client.get("/v1/organizations", headers=admin, params={"limit": limit})
        assert_problem(response, 422, "ValidationError")


def test_admin_renames_an_organization(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    org = make_org(session)
    response = client.patch(f"/v1/organizations/{org.code}", headers=admin, json={"name": "New"})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "New"
    assert response.json()["role"] == org.role.value


def test_organization_patch_rejects_null_unknown_fields_and_unknown_codes(
    client: TestClient, session: Session, admin: dict[str, str]
) -> None:
    org = make_org(session)
    null_name = client.patch(f"/v1/organizations/{org.code}", headers=admin, json={"name": None})
    body = assert_problem(null_name, 422, "ValidationError")
    assert "body.name" in str(body["detail"])
    role_change = client.patch(f"/v1/organizations/{org.code}", headers=admin, json={"role": "oem"})
    assert_problem(role_change, 422, "ValidationError")
    missing = client.patch("/v1/organizations/nope-none", headers=admin, json={"name": "x"})
    assert_problem(missing, 404, "OrganizationNotFound")
