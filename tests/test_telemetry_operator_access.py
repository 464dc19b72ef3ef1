"""Operators read the telemetry and charging sessions their own stations wrote for a battery
that is or was in their slots, and nothing another station wrote (issue 11, finding 8)."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.batteries.custody import relocate
from app.models import Battery, ChargingSession, CustodyCause, KeyRole, LocationKind, OrgRole
from app.models import Station as StationModel
from devices.contract import RecordKind
from tests.fixtures import factories
from tests.fixtures.factories import auth
from tests.fixtures.report_data import ingest

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
WINDOW = {"from": "2026-02-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}


@dataclass
class Journey:
    battery: Battery
    first: StationModel
    second: StationModel
    first_key: dict[str, str]
    second_key: dict[str, str]
    stranger_key: dict[str, str]
    admin_key: dict[str, str]


def _records(session: Session, serial: str, station: StationModel, at: datetime) -> None:
    ingest(session, RecordKind.charging, [
        (serial, at, station.id, 1, 50, 600, 100, 60, 20, 30, 5),
    ])  # fmt: skip
    ingest(session, RecordKind.health, [
        (serial, at, station.id, 95, 1, 3.2, 3.3, 30, 100),
    ])  # fmt: skip
    session.add(
        ChargingSession(
            battery_serial=serial, station_id=station.id, slot=1, started_at=at,
            ended_at=at + timedelta(minutes=30), soc_from_pct=20, soc_to_pct=90,
            energy_start_kwh=0, energy_end_kwh=90, peak_temp_c=31, sample_count=30,
        )
    )  # fmt: skip
    session.flush()


def _journey(session: Session) -> Journey:
    """A battery owned by a leasing company charges at one operator's station, then moves to
    another operator's station and charges there."""
    first_operator = factories.make_org(session)
    second_operator = factories.make_org(session)
    owner = factories.make_org(session, OrgRole.owner)
    pack = factories.make_pack_type(session)
    first = factories.make_station(session, first_operator)
    second = factories.make_station(session, second_operator)
    battery = factories.make_battery(
        session, pack, owner, slot=factories.slot_of(session, first, 1)
    )
    _records(session, battery.serial, first, T0)
    relocate(
        session, battery, kind=LocationKind.slot, cause=CustodyCause.manual_move,
        slot_id=factories.slot_of(session, second, 1).id, at=T0 + timedelta(days=1),
    )  # fmt: skip
    _records(session, battery.serial, second, T0 + timedelta(days=2))
    stranger = factories.make_org(session)
    return Journey(
        battery=battery,
        first=first,
        second=second,
        first_key=auth(factories.make_key(session, KeyRole.operator, first_operator)),
        second_key=auth(factories.make_key(session, KeyRole.operator, second_operator)),
        stranger_key=auth(factories.make_key(session, KeyRole.operator, stranger)),
        admin_key=auth(factories.make_key(session, KeyRole.admin)),
    )


def _stations(client: TestClient, url: str, key: dict[str, str], **params: str) -> list[str]:
    response = client.get(url, params={**WINDOW, **params}, headers=key)
    assert response.status_code == 200, response.text
    return [item["station_code"] for item in response.json()["items"]]


def test_an_operator_reads_what_its_station_wrote_for_a_battery_that_has_left(
    client: TestClient, session: Session
) -> None:
    j = _journey(session)
    base = f"/v1/batteries/{j.battery.serial}"
    for kind in ("charging", "health"):
        telemetry = f"{base}/telemetry"
        assert _stations(client, telemetry, j.first_key, kind=kind) == [j.first.code]
        assert _stations(client, telemetry, j.second_key, kind=kind) == [j.second.code]
        assert _stations(client, telemetry, j.admin_key, kind=kind) == [
            j.first.code,
            j.second.code,
        ]
    sessions = f"{base}/charging-sessions"
    assert _stations(client, sessions, j.first_key) == [j.first.code]
    assert _stations(client, sessions, j.second_key) == [j.second.code]
    # No capacity records at all: an empty page, not a 404.
    assert _stations(client, f"{base}/telemetry", j.first_key, kind="capacity") == []


def test_an_operator_whose_slots_never_held_the_battery_gets_404(
    client: TestClient, session: Session
) -> None:
    j = _journey(session)
    base = f"/v1/batteries/{j.battery.serial}"
    for url, params in (
        (f"{base}/telemetry", {"kind": "charging"}),
        (f"{base}/charging-sessions", {}),
    ):
        response = client.get(url, params={**WINDOW, **params}, headers=j.stranger_key)
        assert response.status_code == 404, response.text
