"""Reports never overflow on data the device contract admits (issue 11, finding 3): one
battery-day of records at the contract's largest values once made every fleet summary answer
422 "value out of range: overflow"."""

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from annotated_types import Le
from app.core.config import get_settings
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.models import KeyRole, OrgRole
from devices.contract import CapacityRecord, ChargingSample, HealthRecord, RecordKind
from tests.fixtures import factories
from tests.fixtures.factories import auth
from tests.fixtures.report_data import ingest

# A fixed window: the reports take explicit dates, so nothing here depends on today.
DAY = datetime(2026, 6, 10, tzinfo=UTC)
WINDOW = {"from": "2026-06-01", "to": "2026-06-30"}
# What an unbounded field admitted: the values of the finding.
UNBOUNDED = 1e308


def largest(model: type[BaseModel], name: str) -> Any:
    """The largest value the contract admits for a field."""
    bounds = [m.le for m in model.model_fields[name].metadata if isinstance(m, Le)]
    return bounds[0] if bounds else UNBOUNDED


def finite_numbers(node: Any) -> bool:
    if isinstance(node, float):
        return math.isfinite(node)
    if isinstance(node, dict):
        return all(finite_numbers(v) for v in node.values())
    if isinstance(node, list):
        return all(finite_numbers(v) for v in node)
    return True


@pytest.fixture
def snapshot_checked_every_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The overflow was in the snapshot's check for newer data, which a young snapshot skips.
    monkeypatch.setenv("SWAPFLEET_REPORT_SNAPSHOT_MAX_AGE_S", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_reports_answer_with_finite_figures_at_the_contracts_largest_values(
    client: TestClient, session: Session, snapshot_checked_every_time: None
) -> None:
    operator = factories.make_org(session)
    oem = factories.make_org(session, OrgRole.oem)
    pack = factories.make_pack_type(session)
    station = factories.make_station(session, operator)
    extreme = factories.make_battery(session, pack, operator, oem=oem).serial
    normal = [factories.make_battery(session, pack, operator, oem=oem).serial for _ in range(5)]

    energy = largest(ChargingSample, "energy_kwh")
    charging = [
        (extreme, DAY + timedelta(seconds=60 * i), station.id, 1, 50.0,
         largest(ChargingSample, "voltage_v"), largest(ChargingSample, "current_a"),
         largest(ChargingSample, "power_kw"), 20.0, 40.0, energy)
        for i in range(3)
    ]  # fmt: skip
    health, capacity = [], []
    for serial in [extreme, *normal]:
        for day in range(0, 12, 4):
            ts = DAY + timedelta(days=day, hours=2)
            if serial == extreme:
                ah, kwh = (
                    largest(CapacityRecord, "capacity_ah"),
                    largest(CapacityRecord, "capacity_kwh"),
                )
                cycles = largest(HealthRecord, "cycle_count")
                resistance = largest(HealthRecord, "internal_resistance_mohm")
            else:
                ah, kwh, cycles, resistance = 270.0 - day, 138.0 - day / 2, 100 + 2 * day, 20.0
            health.append((serial, ts, station.id, 95.0, resistance, 3.3, 3.31, 30.0,
                           min(int(cycles), 2**31 - 1)))  # fmt: skip
            capacity.append((serial, ts + timedelta(seconds=30), station.id, kwh, ah,
                              "full_charge", 25.0))  # fmt: skip
    ingest(session, RecordKind.charging, charging)
    ingest(session, RecordKind.health, health)
    ingest(session, RecordKind.capacity, capacity)
    keys = {
        "admin": factories.make_key(session, KeyRole.admin),
        "oem": factories.make_key(session, KeyRole.oem, oem),
    }

    for who, key in keys.items():
        for attempt in range(2):  # computed, then checked against the stored snapshot
            summary = client.get("/v1/reports/fleet-summary", headers=auth(key), params=WINDOW)
            assert summary.status_code == 200, (who, attempt, summary.text)
            assert finite_numbers(summary.json()), summary.text
        page = client.get("/v1/reports/fleet-summary.html", headers=auth(key), params=WINDOW)
        assert page.status_code == 200, (who, page.text[:500])
        assert "overflow" not in page.text
    passport = client.get(f"/v1/batteries/{extreme}/passport", headers=auth(keys["oem"]))
    assert passport.status_code == 200, passport.text
    body = passport.json()
    assert finite_numbers(body)
    assert body["performance"]["remaining_capacity_ah"] == largest(CapacityRecord, "capacity_ah")
