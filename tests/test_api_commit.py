"""A 2xx means committed: against a real `swapfleet api` process, since the in-process client
with a rolled-back session cannot see when the commit happens relative to the response."""

from collections.abc import Iterator

import httpx
import pytest
from app.core.config import normalize_database_url
from app.core.migrate import upgrade
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session

from app.models import Battery, KeyRole, LocationKind, OrgRole, SwapEvent, SwapOutcome
from tests.conftest import TEST_DATABASE_URL, TEST_DB, recreate_database
from tests.fixtures.api_server import ApiServer, running_api
from tests.fixtures.factories import auth, make_key, make_org, make_pack_type
from tests.fixtures.swap_world import SwapWorld, build_swap_world

# Its own database: these tests commit, and one installs a trigger that fails every commit.
COMMIT_DB = f"{TEST_DB}_commit"
COMMIT_DATABASE_URL = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/" + COMMIT_DB

FAIL_AT_COMMIT = """
CREATE FUNCTION test_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '{errcode}', MESSAGE = 'refused at commit by the test';
END $$;
CREATE CONSTRAINT TRIGGER test_fail_at_commit AFTER INSERT ON swap_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_at_commit();
"""
DROP_FAIL_AT_COMMIT = """
DROP TRIGGER IF EXISTS test_fail_at_commit ON swap_events;
DROP FUNCTION IF EXISTS test_fail_at_commit();
"""


@pytest.fixture(scope="module")
def commit_engine() -> Iterator[Engine]:
    recreate_database(COMMIT_DB)
    upgrade(COMMIT_DATABASE_URL)
    engine = create_engine(normalize_database_url(COMMIT_DATABASE_URL))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def api(commit_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    log = tmp_path_factory.mktemp("api") / "api.log"
    with running_api(COMMIT_DATABASE_URL, log) as server:
        yield server


def committed_world(engine: Engine) -> SwapWorld:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        return build_swap_world(session, charged_socs=(95.0, 96.0))


def test_300_create_then_use_then_read_triples_are_never_refused(
    commit_engine: Engine, api: ApiServer
) -> None:
    with Session(commit_engine) as session, session.begin():
        operator = make_org(session)
        owner = make_org(session, OrgRole.owner)
        pack = make_pack_type(session)
        key = auth(make_key(session, KeyRole.operator, operator))
        owner_code, pack_code = owner.code, pack.code
    refused: list[str] = []
    with httpx.Client(base_url=api.base_url, headers=key, timeout=10) as http:
        for n in range(300):
            code = f"RYW-{n:04d}"
            station = http.post(
                "/v1/stations",
                json={
                    "code": code,
                    "name": "Read-your-writes",
                    "latitude": 52.5,
                    "longitude": 13.4,
                    "timezone": "Europe/Berlin",
                    "slot_count": 1,
                },
            )
            assert station.status_code == 201, station.text
            battery = http.post(
                "/v1/batteries",
                json={
                    "serial": f"RYW-BAT-{n:04d}",
                    "pack_type_code": pack_code,
                    "owner_code": owner_code,
                    "manufactured_on": "2025-03-01",
                    "location": {"kind": "slot", "station_code": code, "slot_number": 1},
                },
            )
            if battery.status_code != 201:
                refused.append(f"{n}: {battery.status_code} {battery.text}")
                continue
            # The read is an async route on another pool (app/core/db.py): it sees the commit too.
            read = http.get(f"/v1/batteries/RYW-BAT-{n:04d}")
            if read.status_code != 200 or read.json()["location"]["station_code"] != code:
                refused.append(f"{n}: read {read.status_code} {read.text}")
    assert refused == [], f"{len(refused)} of 300 refused; first: {refused[:3]}"


def swap_count(engine: Engine, world: SwapWorld) -> int:
    with engine.connect() as connection:
        return (
            connection.scalar(
                select(func.count())
                .select_from(SwapEvent)
                .where(SwapEvent.vehicle_id == world.vehicle.id)
                .where(SwapEvent.outcome == SwapOutcome.completed)
            )
            or 0
        )


def location_of(engine: Engine, serial: str) -> tuple[LocationKind, object]:
    with engine.connect() as connection:
        row = connection.execute(
            select(Battery.location_kind, Battery.vehicle_id).where(Battery.serial == serial)
        ).one()
    return row.location_kind, row.vehicle_id


@pytest.mark.parametrize(
    ("errcode", "status", "code"),
    [
        # Any failure at commit that is not the data's fault: the client may retry.
        ("P0001", 503, "DatabaseUnavailable"),
        # The database refused the data (a deferred constraint): a conflict, with its meaning.
        ("23514", 409, "ConstraintViolation"),
    ],
)
def test_a_swap_whose_commit_fails_is_never_acknowledged_and_its_retry_records_it_once(
    commit_engine: Engine, api: ApiServer, errcode: str, status: int, code: str
) -> None:
    world = committed_world(commit_engine)
    headers = {**auth(world.operator_key), "Idempotency-Key": f"commit-fails-{errcode}"}
    with commit_engine.begin() as connection:
        connection.execute(text(FAIL_AT_COMMIT.format(errcode=errcode)))
    try:
        refused = httpx.post(
            f"{api.base_url}/v1/swaps", json=world.swap_body(), headers=headers, timeout=10
        )
    finally:
        with commit_engine.begin() as connection:
            connection.execute(text(DROP_FAIL_AT_COMMIT))

    assert refused.status_code == status, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == code
    if status == 503:
        assert int(refused.headers["retry-after"]) > 0
    # Custody is as it was: the vehicle still carries its depleted battery.
    assert location_of(commit_engine, world.depleted.serial) == (
        LocationKind.vehicle,
        world.vehicle.id,
    )
    assert swap_count(commit_engine, world) == 0

    retried = httpx.post(
        f"{api.base_url}/v1/swaps", json=world.swap_body(), headers=headers, timeout=10
    )
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    again = httpx.post(
        f"{api.base_url}/v1/swaps", json=world.swap_body(), headers=headers, timeout=10
    )
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert swap_count(commit_engine, world) == 1
    assert location_of(commit_engine, world.depleted.serial)[0] is LocationKind.slot


def test_the_csv_report_streams_after_the_unit_of_work_has_ended(
    commit_engine: Engine, api: ApiServer
) -> None:
    world = committed_world(commit_engine)
    response = httpx.get(
        f"{api.base_url}/v1/reports/batteries",
        headers={**auth(world.oem_key), "Accept": "text/csv"},
        params={"from": "2025-01-01", "to": "2025-12-31"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    header, *rows = response.text.splitlines()
    assert header.startswith("serial,")
    serials = {row.split(",", 1)[0] for row in rows}
    assert serials == {world.depleted.serial, *(b.serial for b in world.charged)}
