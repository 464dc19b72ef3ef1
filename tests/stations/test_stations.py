import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import KeyRole, Organization, OrgRole
from app.stations import repository as station_repository
from app.stations.schemas import MAX_SLOTS
from tests.fixtures.factories import (
    assert_problem,
    auth,
    make_battery,
    make_key,
    make_org,
    make_pack_type,
    make_station,
    slot_of,
    unique,
    walk_pages,
)


def station_body(code: str | None = None, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "code": code or unique("ST-"),
        "name": "Hub",
        "latitude": 52.52,
        "longitude": 13.405,
        "timezone": "Europe/Berlin",
        "slot_count": 3,
    }
    body.update(overrides)
    return body


@pytest.fixture
def admin(session: Session) -> dict[str, str]:
    return auth(make_key(session, KeyRole.admin))


@pytest.fixture
def operator(session: Session) -> Organization:
    return make_org(session, OrgRole.operator)


@pytest.fixture
def operator_key(session: Session, operator: Organization) -> dict[str, str]:
    return auth(make_key(session, KeyRole.operator, operator))


@pytest.fixture
def rival_key(session: Session) -> dict[str, str]:
    """Another operator's key: must never see or touch the first operator's stations."""
    return auth(make_key(session, KeyRole.operator, make_org(session, OrgRole.operator)))


@pytest.fixture
def oem(session: Session) -> Organization:
    return make_org(session, OrgRole.oem)


@pytest.fixture
def oem_key(session: Session, oem: Organization) -> dict[str, str]:
    return auth(make_key(session, KeyRole.oem, oem))


# --- create -----------------------------------------------------------------------------


def test_operator_creates_a_station_for_itself_with_numbered_slots(
    client: TestClient, operator: Organization, operator_key: dict[str, str]
) -> None:
    body = station_body(slot_count=3, target_soc_pct=85)
    response = client.post("/v1/stations", headers=operator_key, json=body)
    assert response.status_code == 201, response.text
    station = response.json()
    assert station["operator_code"] == operator.code
    assert station["slot_count"] == 3
    assert station["status"] == "active"
    assert station["target_soc_pct"] == 85
    assert station["online"] is False
    slots = client.get(f"/v1/stations/{body['code']}/slots", headers=operator_key).json()
    assert [s["number"] for s in slots["items"]] == [1, 2, 3]
    assert all(s["enabled"] and s["battery_serial"] is None for s in slots["items"])


def test_operator_may_name_itself_but_not_another_operator(
    client: TestClient, operator: Organization, operator_key: dict[str, str], session: Session
) -> None:
    own = client.post(
        "/v1/stations", headers=operator_key, json=station_body(operator_code=operator.code)
    )
    assert own.status_code == 201, own.text
    other = make_org(session, OrgRole.operator)
    response = client.post(
        "/v1/stations", headers=operator_key, json=station_body(operator_code=other.code)
    )
    body = assert_problem(response, 403, "Forbidden")
    assert "operator_code" in str(body["detail"])


def test_admin_must_name_the_operator(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post("/v1/stations", headers=admin, json=station_body())
    assert_problem(response, 422, "OperatorCodeRequired")


def test_admin_creates_a_station_for_a_named_operator(
    client: TestClient, admin: dict[str, str], operator: Organization
) -> None:
    response = client.post(
        "/v1/stations", headers=admin, json=station_body(operator_code=operator.code)
    )
    assert response.status_code == 201, response.text
    assert response.json()["operator_code"] == operator.code


def test_admin_station_for_unknown_or_non_operator_org_is_422(
    client: TestClient, session: Session, admin: dict[str, str], oem: Organization
) -> None:
    unknown = client.post("/v1/stations", headers=admin, json=station_body(operator_code="NOPE"))
    assert "NOPE" in str(assert_problem(unknown, 422, "UnknownOrganization")["detail"])
    not_operator = client.post(
        "/v1/stations", headers=admin, json=station_body(operator_code=oem.code)
    )
    assert_problem(not_operator, 422, "OrganizationRoleMismatch")


def test_oem_key_cannot_create_stations(client: TestClient, oem_key: dict[str, str]) -> None:
    assert_problem(
        client.post("/v1/stations", headers=oem_key, json=station_body()), 403, "Forbidden"
    )


def test_duplicate_station_code_is_409_even_across_operators(
    client: TestClient,
    session: Session,
    operator: Organization,
    rival_key: dict[str, str],
) -> None:
    existing = make_station(session, operator)
    response = client.post("/v1/stations", headers=rival_key, json=station_body(existing.code))
    assert_problem(response, 409, "StationExists")


def test_station_unique_violation_on_flush_is_409_not_500(
    client: TestClient,
    session: Session,
    operator: Organization,
    operator_key: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    existing = make_station(session, operator)
    # As if a concurrent request inserted the code after our check: the database decides.
    monkeypatch.setattr(station_repository, "get_station", lambda *_, **__: None)
    response = client.post("/v1/stations", headers=operator_key, json=station_body(existing.code))
    assert_problem(response, 409, "StationExists")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("timezone", "Mars/Olympus_Mons", "unknown IANA time zone 'Mars/Olympus_Mons'"),
        ("timezone", "localtime", "unknown IANA time zone"),
        ("latitude", 91, "less than or equal to 90"),
        ("longitude", -180.5, "greater than or equal to -180"),
        ("target_soc_pct", 101, "less than or equal to 100"),
        ("slot_count", -1, "greater than or equal to 0"),
        ("slot_count", MAX_SLOTS + 1, f"less than or equal to {MAX_SLOTS}"),
        ("status", "broken", "active"),
        ("code", "no spaces", "pattern"),
    ],
)
def test_invalid_station_body_is_422_with_precise_detail(
    client: TestClient, operator_key: dict[str, str], field: str, value: object, fragment: str
) -> None:
    body = station_body()
    body[field] = value
    response = client.post("/v1/stations", headers=operator_key, json=body)
    detail = str(assert_problem(response, 422, "ValidationError")["detail"])
    assert f"body.{field}" in detail
    assert fragment in detail


# --- read, list, isolation --------------------------------------------------------------


def test_station_routes_need_a_key(
    client: TestClient, session: Session, operator: Organization
) -> None:
    station = make_station(session, operator)
    for method, url in [
        ("GET", "/v1/stations"),
        ("GET", f"/v1/stations/{station.code}"),
        ("GET", f"/v1/stations/{station.code}/slots"),
        ("POST", "/v1/stations"),
        ("PATCH", f"/v1/stations/{station.code}"),
        ("POST", f"/v1/stations/{station.code}/slots"),
        ("PATCH", f"/v1/stations/{station.code}/slots/1"),
    ]:
        assert_problem(client.request(method, url, json={}), 401, "Unauthorized")


def test_operator_cannot_see_or_touch_another_operators_station(
    client: TestClient, session: Session, operator: Organization, rival_key: dict[str, str]
) -> None:
    station = make_station(session, operator)
    for method, url, body in [
        ("GET", f"/v1/stations/{station.code}", None),
        ("PATCH", f"/v1/stations/{station.code}", {"name": "mine now"}),
        ("GET", f"/v1/stations/{station.code}/slots", None),
        ("POST", f"/v1/stations/{station.code}/slots", {"count": 1}),
        ("PATCH", f"/v1/stations/{station.code}/slots/1", {"enabled": False}),
    ]:
        response = client.request(method, url, headers=rival_key, json=body)
        assert_problem(response, 404, "StationNotFound")
    session.refresh(station)
    assert station.name == "Test station"
    assert slot_of(session, station, 1).enabled is True


def test_operator_lists_only_its_own_stations(
    client: TestClient,
    session: Session,
    operator: Organization,
    operator_key: dict[str, str],
) -> None:
    mine = {make_station(session, operator).code for _ in range(2)}
    rival = make_org(session, OrgRole.operator)
    theirs = make_station(session, rival)
    listed = client.get("/v1/stations", headers=operator_key)
    assert {s["code"] for s in listed.json()["items"]} == mine
    asked_for_rival = client.get(
        "/v1/stations", headers=operator_key, params={"operator_code": rival.code}
    )
    assert asked_for_rival.json()["items"] == []
    assert theirs.code not in str(asked_for_rival.json())


def test_admin_filters_stations_by_operator_and_status(
    client: TestClient, session: Session, admin: dict[str, str], operator: Organization
) -> None:
    other = make_org(session, OrgRole.operator)
    a = make_station(session, operator)
    b = make_station(session, operator)
    c = make_station(session, other)
    client.patch(f"/v1/stations/{b.code}", headers=admin, json={"status": "maintenance"})

    def codes(**params: str) -> set[str]:
        response = client.get("/v1/stations", headers=admin, params=params)
        assert response.status_code == 200, response.text
        return {s["code"] for s in response.json()["items"]}

    assert codes(operator_code=operator.code) == {a.code, b.code}
    assert codes(status="maintenance") == {b.code}
    assert codes(operator_code=other.code, status="active") == {c.code}
    assert_problem(
        client.get("/v1/stations", headers=admin, params={"status": "nope"}),
        422,
        "ValidationError",
    )


def test_station_cursor_walks_every_page_once(
    client: TestClient, session: Session, operator: Organization, operator_key: dict[str, str]
) -> None:
    created = {make_station(session, operator, slots=0).code for _ in range(7)}
    codes = walk_pages(client, "/v1/stations", operator_key, limit=3, key="code")
    assert set(codes) == created
    assert codes == sorted(codes)


def test_oem_key_reads_every_station_but_cannot_change_them(
    client: TestClient, session: Session, operator: Organization, oem_key: dict[str, str]
) -> None:
    stations = {make_station(session, operator).code, make_station(session, make_org(session)).code}
    # The largest page: other tests commit stations of their own too.
    listed = client.get("/v1/stations", headers=oem_key, params={"limit": 500})
    assert stations <= {s["code"] for s in listed.json()["items"]}
    code = next(iter(stations))
    assert client.get(f"/v1/stations/{code}", headers=oem_key).status_code == 200
    for method, url, body in [
        ("PATCH", f"/v1/stations/{code}", {"name": "x"}),
        ("POST", f"/v1/stations/{code}/slots", {"count": 1}),
        ("PATCH", f"/v1/stations/{code}/slots/1", {"enabled": False}),
    ]:
        assert_problem(client.request(method, url, headers=oem_key, json=body), 403, "Forbidden")


def test_unknown_station_is_404(client: TestClient, admin: dict[str, str]) -> None:
    assert_problem(client.get("/v1/stations/NOPE", headers=admin), 404, "StationNotFound")
    assert_problem(client.get("/v1/stations/NOPE/slots", headers=admin), 404, "StationNotFound")


# --- update -----------------------------------------------------------------------------


def test_operator_updates_its_station(
    client: TestClient, session: Session, operator: Organization, operator_key: dict[str, str]
) -> None:
    station = make_station(session, operator)
    response = client.patch(
        f"/v1/stations/{station.code}",
        headers=operator_key,
        json={
            "name": "Hub north",
            "status": "maintenance",
            "target_soc_pct": 80,
            "latitude": 31.23,
            "longitude": 121.47,
            "timezone": "Asia/Shanghai",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["status"], body["target_soc_pct"]) == (
        "Hub north",
        "maintenance",
        80,
    )
    assert (body["latitude"], body["longitude"]) == (31.23, 121.47)
    assert body["slot_count"] == 4
    reread = client.get(f"/v1/stations/{station.code}", headers=operator_key).json()
    assert reread["status"] == "maintenance"


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"timezone": "Europe/Atlantis"}, "unknown IANA time zone 'Europe/Atlantis'"),
        ({"target_soc_pct": -5}, "greater than or equal to 0"),
        ({"name": None}, "may be omitted but not null"),
        ({"status": None}, "may be omitted but not null"),
        ({"operator_code": "someone"}, "Extra inputs are not permitted"),
        ({"online": True}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_station_patch_is_422_and_changes_nothing(
    client: TestClient,
    session: Session,
    operator: Organization,
    operator_key: dict[str, str],
    patch: dict[str, object],
    fragment: str,
) -> None:
    station = make_station(session, operator)
    response = client.patch(f"/v1/stations/{station.code}", headers=operator_key, json=patch)
    assert fragment in str(assert_problem(response, 422, "ValidationError")["detail"])
    assert (
        client.get(f"/v1/stations/{station.code}", headers=operator_key).json()["timezone"]
        == "Asia/Shanghai"
    )


# --- slots ------------------------------------------------------------------------------


def test_slots_show_the_battery_they_hold(
    client: TestClient,
    session: Session,
    operator: Organization,
    operator_key: dict[str, str],
    oem: Organization,
) -> None:
    station = make_station(session, operator, slots=3)
    pack = make_pack_type(session)
    battery = make_battery(
        session, pack, operator, oem=oem, slot=slot_of(session, station, 2), soc_pct=88.5
    )
    response = client.get(f"/v1/stations/{station.code}/slots", headers=operator_key)
    assert response.status_code == 200
    slots = {s["number"]: s for s in response.json()["items"]}
    assert slots[1]["battery_serial"] is None
    assert slots[1]["occupied"] is False
    assert slots[2]["battery_serial"] == battery.serial
    assert slots[2]["occupied"] is True
    assert slots[2]["soc_pct"] == 88.5
    assert slots[2]["soh_pct"] == 97.0
    assert slots[2]["battery_state"] == "in_service"
    assert slots[2]["pack_type_code"] == pack.code


def test_oem_key_sees_slot_availability_but_not_other_oems_battery_identity(
    client: TestClient,
    session: Session,
    operator: Organization,
    oem: Organization,
    oem_key: dict[str, str],
) -> None:
    station = make_station(session, operator, slots=2)
    pack = make_pack_type(session)
    mine = make_battery(session, pack, operator, oem=oem, slot=slot_of(session, station, 1))
    make_battery(
        session,
        pack,
        operator,
        oem=make_org(session, OrgRole.oem),
        slot=slot_of(session, station, 2),
    )
    response = client.get(f"/v1/stations/{station.code}/slots", headers=oem_key)
    assert response.status_code == 200
    own_slot, other_slot = response.json()["items"]
    assert own_slot["battery_serial"] == mine.serial
    assert own_slot["soh_pct"] == 97.0
    assert other_slot["occupied"] is True
    assert other_slot["battery_serial"] is None
    assert other_slot["soh_pct"] is None
    assert other_slot["soc_pct"] == 95.0
    assert other_slot["pack_type_code"] == pack.code


def test_operator_adds_slots_after_the_last_one(
    client: TestClient, session: Session, operator: Organization, operator_key: dict[str, str]
) -> None:
    station = make_station(session, operator, slots=3)
    response = client.post(
        f"/v1/stations/{station.code}/slots", headers=operator_key, json={"count": 2}
    )
    assert response.status_code == 201, response.text
    assert [s["number"] for s in response.json()] == [4, 5]
    numbers = walk_pages(
        client, f"/v1/stations/{station.code}/slots", operator_key, limit=2, key="number"
    )
    assert numbers == [1, 2, 3, 4, 5]
    assert (
        client.get(f"/v1/stations/{station.code}", headers=operator_key).json()["slot_count"] == 5
    )


def test_adding_slots_rejects_zero_and_more_than_the_cap(
    client: TestClient, session: Session, operator: Organization, operator_key: dict[str, str]
) -> None:
    station = make_station(session, operator, slots=4)
    url = f"/v1/stations/{station.code}/slots"
    zero = client.post(url, headers=operator_key, json={"count": 0})
    assert "body.count" in str(assert_problem(zero, 422, "ValidationError")["detail"])
    too_many = client.post(url, headers=operator_key, json={"count": MAX_SLOTS - 3})
    detail = str(assert_problem(too_many, 422, "TooManySlots")["detail"])
    assert f"has 4 slots; adding {MAX_SLOTS - 3} would exceed {MAX_SLOTS}" in detail
    exactly_full = client.post(url, headers=operator_key, json={"count": MAX_SLOTS - 4})
    assert exactly_full.status_code == 201


def test_operator_disables_and_reenables_a_slot(
    client: TestClient, session: Session, operator: Organization, operator_key: dict[str, str]
) -> None:
    station = make_station(session, operator, slots=2)
    url = f"/v1/stations/{station.code}/slots/2"
    disabled = client.patch(url, headers=operator_key, json={"enabled": False})
    assert disabled.status_code == 200, disabled.text
    assert disabled.json() == {
        "number": 2,
        "enabled": False,
        "occupied": False,
        "battery_serial": None,
        "pack_type_code": None,
        "battery_state": None,
        "soc_pct": None,
        "soh_pct": None,
        "connector_status": None,
        "connector_status_at": None,
        "fault": None,
    }
    slots = client.get(f"/v1/stations/{station.code}/slots", headers=operator_key).json()
    assert [s["enabled"] for s in slots["items"]] == [True, False]
    assert client.patch(url, headers=operator_key, json={"enabled": True}).json()["enabled"]


def test_slot_patch_rejects_unknown_slots_and_bad_bodies(
    client: TestClient, session: Session, operator: Organization, operator_key: dict[str, str]
) -> None:
    station = make_station(session, operator, slots=2)
    base = f"/v1/stations/{station.code}/slots"
    missing = client.patch(f"{base}/3", headers=operator_key, json={"enabled": False})
    assert "has no slot 3" in str(assert_problem(missing, 404, "SlotNotFound")["detail"])
    zero = client.patch(f"{base}/0", headers=operator_key, json={"enabled": False})
    assert "path.number" in str(assert_problem(zero, 422, "ValidationError")["detail"])
    no_body = client.patch(f"{base}/1", headers=operator_key, json={})
    assert "body.enabled" in str(assert_problem(no_body, 422, "ValidationError")["detail"])
