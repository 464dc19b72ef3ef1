"""Swaps reach the report aggregates after their commit (issue 12): nothing every swap shares
is updated inside a swap's transaction, and the reports count exactly what they counted when
a trigger added each swap to them inside its transaction."""

import importlib.util
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import get_engine, get_session_factory
from app.main import create_app
from app.reports import repository as report_repository
from app.rollups.swaps import roll_up_swaps
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.api_server import running_api
from tests.fixtures.committed import truncate_all
from tests.fixtures.factories import auth, make_battery, slot_of
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.swap_world import SwapWorld, build_swap_world

DAY_1 = date(2026, 3, 10)
DAY_2 = date(2026, 3, 11)
MIGRATIONS = REPO_ROOT / "migrations" / "versions"


def old_trigger_function() -> str:
    """The trigger that added each swap to the aggregates inside the swap's transaction."""
    path = MIGRATIONS / "2026_11_22_1530-c4d8e2f1a7b3_report_aggregates.py"
    spec = importlib.util.spec_from_file_location("report_aggregates_migration", path)
    assert spec is not None
    assert spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.SWAP_TRIGGER_FUNCTION).replace(
        "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"
    )


def record_swaps(client: TestClient, session: Session, world: SwapWorld) -> int:
    """Completed and rejected swaps over two days, one rejected for the battery's health."""
    low_soh = make_battery(
        session, world.pack, world.owner, oem=world.oem, slot=slot_of(session, world.station, 5),
        soc_pct=99.0, soh_pct=50.0,
    )  # fmt: skip
    bodies: list[dict[str, object]] = [
        world.swap_body(installed_battery_serial=low_soh.serial,
                        started_at=f"{DAY_1}T07:00:00Z"),  # BatterySoHLow
        world.swap_body(vin="ZZZZZ000000000001", started_at=f"{DAY_1}T07:30:00Z"),  # VehicleUnknown
        world.swap_body(removed_battery_serial=world.charged[1].serial,
                        started_at=f"{DAY_1}T08:00:00Z"),  # BatteryMismatch
        world.swap_body(started_at=f"{DAY_1}T23:59:00Z"),  # completed
    ]  # fmt: skip
    for body in bodies:
        response = client.post("/v1/swaps", json=body, headers=auth(world.operator_key))
        assert response.status_code in (201, 409, 422), response.text
    # The next day the vehicle swaps again, handing in what it got.
    carried = response.json()["installed_battery_serial"]
    response = client.post(
        "/v1/swaps",
        json=world.swap_body(removed_battery_serial=carried, started_at=f"{DAY_2}T00:01:00Z"),
        headers=auth(world.operator_key),
    )
    assert response.status_code == 201, response.text
    return len(bodies) + 1


def oem_counts(session: Session, oem_id: int) -> dict[tuple[str, str], int]:
    rows = report_repository.swap_counts(session, oem_id, DAY_1, DAY_2)
    return {(r.outcome, r.reason_code): int(r.n) for r in rows}


def battery_swaps(session: Session, serials: list[str]) -> dict[tuple[str, str], Any]:
    rows = session.execute(
        text(
            "SELECT d.battery_serial, d.day, d.swaps_in, d.swaps_out, d.health_rejections,"
            " m.swaps_in AS m_in, m.swaps_out AS m_out, m.health_rejections AS m_rej"
            " FROM battery_daily d JOIN battery_monthly m ON m.battery_serial = d.battery_serial"
            " AND m.month = date_trunc('month', d.day)::date"
            " WHERE d.battery_serial = ANY(:s) ORDER BY 1, 2"
        ),
        {"s": serials},
    ).mappings()
    return {(r["battery_serial"], str(r["day"])): dict(r) for r in rows}


def test_reports_count_the_same_swaps_as_the_old_trigger(
    session: Session, client: TestClient
) -> None:
    world = build_swap_world(session, charged_socs=(95.0, 96.0), slots=6)
    recorded = record_swaps(client, session, world)
    serials = [
        s for (s,) in session.execute(
            text("SELECT serial FROM batteries WHERE owner_id = :o"), {"o": world.owner.id}
        )
    ]  # fmt: skip

    # New path: counted while queued, then rolled up.
    queued = oem_counts(session, world.oem.id)
    assert battery_swaps(session, serials) == {}
    roll_up_swaps(session.connection(), wait=True)
    rolled = oem_counts(session, world.oem.id)
    rolled_batteries = battery_swaps(session, serials)

    # Old path on the same swaps: the old trigger, fired by inserting the same rows again.
    session.execute(text(old_trigger_function()))
    session.execute(text("DELETE FROM oem_swap_daily WHERE oem_id = :o"), {"o": world.oem.id})
    session.execute(
        text("DELETE FROM battery_daily WHERE battery_serial = ANY(:s)"), {"s": serials}
    )
    session.execute(
        text("DELETE FROM battery_monthly WHERE battery_serial = ANY(:s)"), {"s": serials}
    )
    session.execute(
        text(
            "CREATE TEMP TABLE replayed ON COMMIT DROP AS"
            " SELECT * FROM swap_events WHERE station_id = :st"
        ),
        {"st": world.station.id},
    )
    session.execute(
        text("DELETE FROM swap_events WHERE station_id = :st"), {"st": world.station.id}
    )
    session.execute(text("INSERT INTO swap_events SELECT * FROM replayed ORDER BY created_at"))
    old = oem_counts(session, world.oem.id)
    old_batteries = battery_swaps(session, serials)

    assert queued == rolled == old
    assert rolled == {
        ("completed", ""): 2,
        ("rejected", "BatterySoHLow"): 1,
        ("rejected", "VehicleUnknown"): 1,
        ("rejected", "BatteryMismatch"): 1,
    }
    assert sum(rolled.values()) == recorded
    assert rolled_batteries == old_batteries
    assert sum(r["health_rejections"] for r in rolled_batteries.values()) == 1
    assert sum(r["swaps_in"] for r in rolled_batteries.values()) == 2


# ---------------------------------------------------------------- committed data


@pytest.fixture
def committed_world(engine: Engine) -> Iterator[SwapWorld]:
    get_settings.cache_clear()
    get_engine.cache_clear()
    get_session_factory.cache_clear()
    with Session(engine, expire_on_commit=False) as session:
        world = build_swap_world(session, charged_socs=(95.0, 96.0))
        session.commit()
    yield world
    truncate_all(engine)


def test_a_swap_does_not_wait_for_the_report_aggregates(committed_world: SwapWorld) -> None:
    """Another transaction holds every aggregate table against writers (as a rebuild of one
    OEM's counters, or the swap before it updating the shared counter, would): the swap still
    commits at once, because nothing in its transaction writes to them."""
    world = committed_world
    result: dict[str, int] = {}

    def swap() -> None:
        with TestClient(create_app()) as client:
            response = client.post(
                "/v1/swaps", json=world.swap_body(), headers=auth(world.operator_key)
            )
            result["status"] = response.status_code

    with psycopg.connect(TEST_DATABASE_URL) as blocker:
        blocker.execute(
            "LOCK TABLE oem_swap_daily, battery_daily, battery_monthly IN SHARE ROW EXCLUSIVE MODE"
        )
        worker = threading.Thread(target=swap)
        started = time.monotonic()
        worker.start()
        worker.join(10)
        waited = time.monotonic() - started
        finished = not worker.is_alive()
        blocker.rollback()
    worker.join(30)
    assert finished, "the swap waited for a lock on the report aggregates"
    assert result["status"] == 201
    assert waited < 10


def test_a_real_server_rolls_committed_swaps_up(
    committed_world: SwapWorld, engine: Engine, tmp_path: Path
) -> None:
    world = committed_world
    with running_api(
        TEST_DATABASE_URL, tmp_path / "api.log", env={"SWAPFLEET_SWAP_ROLLUP_INTERVAL_S": "0.2"}
    ) as api:
        import httpx

        response = httpx.post(
            f"{api.base_url}/v1/swaps",
            json=world.swap_body(started_at=f"{DAY_1}T09:00:00Z"),
            headers=auth(world.operator_key),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                queued = conn.execute(text("SELECT count(*) FROM swap_rollup_queue")).scalar()
                counted = conn.execute(
                    text("SELECT swaps FROM oem_swap_daily WHERE oem_id = :o AND day = :d"),
                    {"o": world.oem.id, "d": DAY_1},
                ).scalar()
            if queued == 0 and counted is not None:
                break
            time.sleep(0.1)
    assert (queued, counted) == (0, 1)
