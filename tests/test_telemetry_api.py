"""REST read-back of telemetry, with keys scoped by role and organization."""

from datetime import timedelta

from app.core import clock
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import (
    ChargingSample,
    ChargingSession,
    DeadLetter,
    HealthRecord,
    KeyRole,
    OrgRole,
    VehicleTelemetry,
)
from tests.fixtures import factories
from tests.fixtures.factories import auth

T0 = clock.now().replace(microsecond=0) - timedelta(days=1)


def _setup(session: Session) -> dict[str, object]:
    operator = factories.make_org(session)
    oem = factories.make_org(session, OrgRole.oem)
    other_oem = factories.make_org(session, OrgRole.oem)
    pack = factories.make_pack_type(session)
    station = factories.make_station(session, operator)
    battery = factories.make_battery(
        session, pack, operator, oem=oem, slot=factories.slot_of(session, station, 1)
    )
    vehicle = factories.make_vehicle(session, factories.make_vehicle_model(session, oem, pack))
    for i in range(5):
        session.add(
            ChargingSample(
                battery_serial=battery.serial, ts=T0 + timedelta(minutes=4 - i),
                station_id=station.id, slot=1, soc_pct=50 + i, voltage_v=500, current_a=100,
                power_kw=50, temp_c_min=20, temp_c_max=30, energy_kwh=i, extra={"fw": "1"},
            )
        )  # fmt: skip
    session.add(
        HealthRecord(
            battery_serial=battery.serial, ts=T0, station_id=station.id, soh_pct=95,
            internal_resistance_mohm=1, cell_voltage_min_v=3.2, cell_voltage_max_v=3.3,
            temp_c_max=30, cycle_count=100,
        )
    )  # fmt: skip
    session.add(
        VehicleTelemetry(
            vin=vehicle.vin, ts=T0, battery_serial=battery.serial, soc_pct=60, odometer_km=10,
            pack_voltage_v=500, pack_current_a=-20, temp_c_max=31, lat=None, lon=None,
        )
    )  # fmt: skip
    session.add(
        ChargingSession(
            battery_serial=battery.serial, station_id=station.id, slot=1, started_at=T0,
            ended_at=T0 + timedelta(minutes=4), soc_from_pct=50, soc_to_pct=54,
            energy_start_kwh=0, energy_end_kwh=4, peak_temp_c=30, sample_count=5,
        )
    )  # fmt: skip
    session.flush()
    return {
        "serial": battery.serial,
        "vin": vehicle.vin,
        "station_code": station.code,
        "oem_key": factories.make_key(session, KeyRole.oem, oem),
        "other_oem_key": factories.make_key(session, KeyRole.oem, other_oem),
        "operator_key": factories.make_key(session, KeyRole.operator, operator),
        "other_operator_key": factories.make_key(
            session, KeyRole.operator, factories.make_org(session)
        ),
        "admin_key": factories.make_key(session, KeyRole.admin),
    }


def test_battery_telemetry_pages_oldest_first_for_the_owning_oem(
    client: TestClient, session: Session
) -> None:
    s = _setup(session)
    url = f"/v1/batteries/{s['serial']}/telemetry"
    first = client.get(
        url, params={"kind": "charging", "limit": 3}, headers=auth(str(s["oem_key"]))
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert [i["soc_pct"] for i in body["items"]] == [54, 53, 52]
    assert body["items"][0]["station_code"] == s["station_code"]
    assert body["items"][0]["extra"] == {"fw": "1"}
    second = client.get(
        url, params={"kind": "charging", "limit": 3, "cursor": body["next_cursor"]},
        headers=auth(str(s["oem_key"])),
    )  # fmt: skip
    assert [i["soc_pct"] for i in second.json()["items"]] == [51, 50]
    assert second.json()["next_cursor"] is None


def test_battery_telemetry_filters_by_kind_and_time_range(
    client: TestClient, session: Session
) -> None:
    s = _setup(session)
    url = f"/v1/batteries/{s['serial']}/telemetry"
    health = client.get(url, params={"kind": "health"}, headers=auth(str(s["admin_key"])))
    assert [i["soh_pct"] for i in health.json()["items"]] == [95]
    window = client.get(
        url,
        params={"kind": "charging", "from": (T0 + timedelta(minutes=1)).isoformat(),
                "to": (T0 + timedelta(minutes=3)).isoformat()},
        headers=auth(str(s["operator_key"])),
    )  # fmt: skip
    assert [i["soc_pct"] for i in window.json()["items"]] == [53, 52]


def test_another_oems_battery_and_vehicle_are_not_found(
    client: TestClient, session: Session
) -> None:
    s = _setup(session)
    key = auth(str(s["other_oem_key"]))
    battery = client.get(f"/v1/batteries/{s['serial']}/telemetry?kind=charging", headers=key)
    assert battery.status_code == 404
    assert battery.json()["code"] == "NotFound"
    assert client.get(f"/v1/vehicles/{s['vin']}/telemetry", headers=key).status_code == 404
    sessions = client.get(f"/v1/batteries/{s['serial']}/charging-sessions", headers=key)
    assert sessions.status_code == 404


def test_bad_query_parameters_get_precise_problems(client: TestClient, session: Session) -> None:
    s = _setup(session)
    key = auth(str(s["oem_key"]))
    url = f"/v1/batteries/{s['serial']}/telemetry"
    missing = client.get(url, headers=key)
    assert missing.status_code == 422
    assert missing.headers["content-type"] == "application/problem+json"
    reversed_range = client.get(
        url,
        params={"kind": "charging", "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        headers=key,
    )
    assert reversed_range.status_code == 422
    assert reversed_range.json()["code"] == "InvalidTimeRange"
    naive = client.get(url, params={"kind": "charging", "from": "2026-01-01T00:00:00"}, headers=key)
    assert naive.json()["code"] == "InvalidTimeRange"
    bad_cursor = client.get(url, params={"kind": "charging", "cursor": "zz"}, headers=key)
    assert bad_cursor.json()["code"] == "InvalidCursor"
    assert client.get(url, params={"kind": "charging"}).status_code == 401


def test_vehicle_telemetry_and_charging_sessions_read_back(
    client: TestClient, session: Session
) -> None:
    s = _setup(session)
    key = auth(str(s["oem_key"]))
    vehicle = client.get(f"/v1/vehicles/{s['vin']}/telemetry", headers=key)
    assert vehicle.status_code == 200, vehicle.text
    assert [(i["soc_pct"], i["battery_serial"]) for i in vehicle.json()["items"]] == [
        (60, s["serial"])
    ]
    sessions = client.get(f"/v1/batteries/{s['serial']}/charging-sessions", headers=key)
    assert sessions.status_code == 200, sessions.text
    (item,) = sessions.json()["items"]
    assert (item["energy_kwh"], item["soc_from_pct"], item["sample_count"]) == (4, 50, 5)


def test_dead_letters_are_for_operators_of_the_station_and_admins(
    client: TestClient, session: Session
) -> None:
    s = _setup(session)
    session.add(
        DeadLetter(
            received_at=T0, topic=f"swapfleet/v1/stations/{s['station_code']}/charging",
            payload=b"\xffnot json", payload_bytes=9, record_index=None, reason="not_json",
            detail="bad", station_code=s["station_code"], vin=None,
        )
    )  # fmt: skip
    session.flush()
    own = client.get("/v1/dead-letters", headers=auth(str(s["operator_key"])))
    assert own.status_code == 200, own.text
    (item,) = own.json()["items"]
    assert (item["reason"], item["payload"]) == ("not_json", "\ufffdnot json")
    other = client.get("/v1/dead-letters", headers=auth(str(s["other_operator_key"])))
    assert other.json()["items"] == []
    admin = client.get(
        "/v1/dead-letters", params={"reason": "not_json"}, headers=auth(str(s["admin_key"]))
    )
    assert s["station_code"] in [i["station_code"] for i in admin.json()["items"]]
    assert client.get("/v1/dead-letters", headers=auth(str(s["oem_key"]))).status_code == 403
