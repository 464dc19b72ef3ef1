"""OEM reports: scopes, parameters, fade-rate fit, passport and anomalies."""

import csv
import dataclasses
import io
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.core import clock
from app.core.config import get_settings
from app.models import Battery, BatteryState, KeyRole, Organization, OrgRole, PackType
from app.reports import repository as report_repo
from app.reports.anomalies import find_anomalies
from app.reports.figures import least_squares_slope
from app.reports.passport import UNEXPLAINED
from app.reports.service import iter_battery_rows, refresh_recommendations
from devices.contract import RecordKind
from tests.fixtures import factories
from tests.fixtures.factories import assert_problem, auth, walk_pages
from tests.fixtures.report_data import ChargingPlan, ingest

NOMINAL_AH = 280.0
DAYS = 40
CYCLES_PER_DAY = 2.0
# Capacity lost per cycle, in Ah: 0.02 Ah/cycle is 7.14 % of 280 Ah per 1,000 cycles.
NORMAL_FADE_AH = 0.02
FAST_FADE_AH = 0.08


def window_start() -> datetime:
    today = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=DAYS + 2)


@dataclass
class ReportWorld:
    oem: Organization
    other_oem: Organization
    pack: PackType
    serials: list[str]
    fast_fader: str
    other_serial: str
    silent_serial: str
    admin_key: str
    oem_key: str
    other_oem_key: str
    operator_key: str
    station_id: int
    noise: dict[str, float] = field(default_factory=dict)


def history(
    session: Session, world_station: int, serial: str, fade_ah: float, wobble: float
) -> None:
    """A health record then a capacity record every 4 days; cycles grow 2 a day."""
    start = window_start()
    health, capacity = [], []
    for day in range(0, DAYS, 4):
        ts = start + timedelta(days=day, hours=10)
        cycles = round(100 + CYCLES_PER_DAY * day)
        # An alternating wobble: the fit must see through it, a two-point difference would not.
        ah = NOMINAL_AH - 2.0 - fade_ah * cycles + (wobble if day % 8 else -wobble)
        health.append((serial, ts, world_station, ah / NOMINAL_AH * 100.0, 20.0 + 0.01 * day,
                       3.30, 3.305, 30.0, cycles))  # fmt: skip
        capacity.append((serial, ts + timedelta(seconds=30), world_station, ah * 0.512, ah,
                         "full_charge", 25.0))  # fmt: skip
    ingest(session, RecordKind.health, health)
    ingest(session, RecordKind.capacity, capacity)


@pytest.fixture
def world(session: Session) -> ReportWorld:
    operator = factories.make_org(session)
    oem = factories.make_org(session, OrgRole.oem)
    other_oem = factories.make_org(session, OrgRole.oem)
    pack = factories.make_pack_type(session)
    station = factories.make_station(session, operator)
    batteries = [factories.make_battery(session, pack, operator, oem=oem) for _ in range(7)]
    other = factories.make_battery(session, pack, operator, oem=other_oem)
    silent = factories.make_battery(session, pack, operator, oem=oem, soh_pct=None)
    serials = [b.serial for b in batteries]
    for i, serial in enumerate(serials[:-1]):
        history(session, station.id, serial, NORMAL_FADE_AH * (1 + 0.02 * i), wobble=0.3)
    history(session, station.id, serials[-1], FAST_FADE_AH, wobble=0.3)
    history(session, station.id, other.serial, NORMAL_FADE_AH, wobble=0.0)
    charging = ChargingPlan(serials[0], station.id, window_start() + timedelta(days=3))
    ingest(session, RecordKind.charging, charging.build())
    return ReportWorld(
        oem=oem,
        other_oem=other_oem,
        pack=pack,
        serials=serials + [silent.serial],
        fast_fader=serials[-1],
        other_serial=other.serial,
        silent_serial=silent.serial,
        admin_key=factories.make_key(session, KeyRole.admin),
        oem_key=factories.make_key(session, KeyRole.oem, oem),
        other_oem_key=factories.make_key(session, KeyRole.oem, other_oem),
        operator_key=factories.make_key(session, KeyRole.operator, operator),
        station_id=station.id,
    )


def window() -> dict[str, str]:
    start = window_start().date()
    return {"from": start.isoformat(), "to": (start + timedelta(days=DAYS + 1)).isoformat()}


def rows_by_serial(client: TestClient, key: str, **params: Any) -> dict[str, dict[str, Any]]:
    response = client.get(
        "/v1/reports/batteries", headers=auth(key), params={**window(), "limit": 500, **params}
    )
    assert response.status_code == 200, response.text
    return {r["serial"]: r for r in response.json()["items"]}


# ---------------------------------------------------------------- fade rate


def test_least_squares_slope_needs_three_points_and_a_spread() -> None:
    assert least_squares_slope(2, 1.0, 2.0, 1.0, 2.0) is None
    assert least_squares_slope(3, 3.0, 6.0, 3.0, 6.0) is None  # x = 1, 1, 1
    # y = 2x + 1 over x = 0, 1, 2
    assert least_squares_slope(3, 3.0, 9.0, 5.0, 13.0) == pytest.approx(2.0)


def test_fade_rate_recovers_a_known_slope_within_one_percent(
    client: TestClient, world: ReportWorld
) -> None:
    row = rows_by_serial(client, world.other_oem_key)[world.other_serial]
    expected_per_1000 = NORMAL_FADE_AH * 1000 / NOMINAL_AH * 100
    expected_per_year = NORMAL_FADE_AH * CYCLES_PER_DAY * 365.25 / NOMINAL_AH * 100
    assert row["capacity_records"] == DAYS // 4
    assert row["capacity_fade_pct_per_1000_cycles"] == pytest.approx(expected_per_1000, rel=0.01)
    assert row["capacity_fade_pct_per_year"] == pytest.approx(expected_per_year, rel=0.01)


def test_fade_rate_is_a_least_squares_fit_not_a_two_point_difference(
    client: TestClient, world: ReportWorld
) -> None:
    fade = NORMAL_FADE_AH
    points = [(round(100 + CYCLES_PER_DAY * day),
               NOMINAL_AH - 2.0 - fade * round(100 + CYCLES_PER_DAY * day)
               + (0.3 if day % 8 else -0.3)) for day in range(0, DAYS, 4)]  # fmt: skip
    fitted = statistics.linear_regression([p[0] for p in points], [p[1] for p in points]).slope
    two_point = (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
    assert abs(two_point / fitted - 1) > 0.05
    row = rows_by_serial(client, world.oem_key)[world.serials[0]]
    assert row["capacity_fade_pct_per_1000_cycles"] == pytest.approx(
        -fitted / NOMINAL_AH * 100 * 1000, rel=1e-6
    )


def test_fade_rate_is_null_below_three_capacity_records(
    client: TestClient, world: ReportWorld
) -> None:
    start = window_start().date()
    params = {"from": start.isoformat(), "to": (start + timedelta(days=5)).isoformat()}
    row = rows_by_serial(client, world.oem_key, **params)[world.serials[0]]
    assert row["capacity_records"] == 2
    assert row["capacity_fade_pct_per_1000_cycles"] is None
    assert row["capacity_fade_pct_per_year"] is None


def test_battery_rows_carry_window_figures(client: TestClient, world: ReportWorld) -> None:
    rows = rows_by_serial(client, world.oem_key)
    first = rows[world.serials[0]]
    assert first["charging_sessions"] == 2
    assert first["energy_throughput_kwh"] == pytest.approx(30.0)
    assert first["hours_above_45c"] > 0
    assert first["soh_start_pct"] > first["soh_end_pct"]
    assert first["internal_resistance_increase_pct"] == pytest.approx((20.36 / 20.0 - 1) * 100)
    assert first["age_days"] == (date.fromisoformat(window()["to"]) - date(2025, 1, 15)).days
    silent = rows[world.silent_serial]
    assert silent["soh_end_pct"] is None
    assert silent["capacity_fade_pct_per_year"] is None
    assert silent["charging_sessions"] == 0


# ---------------------------------------------------------------- scopes


def test_oem_key_never_sees_another_oems_battery_in_any_report(
    client: TestClient, world: ReportWorld
) -> None:
    own = rows_by_serial(client, world.other_oem_key)
    assert set(own) == {world.other_serial}

    summary = client.get(
        "/v1/reports/fleet-summary", headers=auth(world.other_oem_key), params=window()
    ).json()
    assert summary["counts"]["total"] == 1
    assert summary["batteries_reporting"] == 1
    assert all(a["serial"] == world.other_serial for a in summary["anomalies"])

    response = client.get(
        "/v1/reports/batteries",
        headers={**auth(world.other_oem_key), "Accept": "text/csv"},
        params=window(),
    )
    assert response.status_code == 200
    serials = [r["serial"] for r in csv.DictReader(io.StringIO(response.text))]
    assert serials == [world.other_serial]

    for serial in (world.serials[0], world.fast_fader):
        assert_problem(
            client.get(f"/v1/batteries/{serial}/passport", headers=auth(world.other_oem_key)),
            404,
            "BatteryNotFound",
        )
    assert (
        client.get(
            f"/v1/batteries/{world.other_serial}/passport", headers=auth(world.other_oem_key)
        ).status_code
        == 200
    )


def test_oem_key_may_not_name_another_oem(client: TestClient, world: ReportWorld) -> None:
    for path in ("/v1/reports/fleet-summary", "/v1/reports/batteries"):
        response = client.get(
            path, headers=auth(world.other_oem_key), params={"oem_code": world.oem.code}
        )
        assert_problem(response, 403, "ReportsForbidden")


def test_admin_names_an_oem_and_sees_only_its_fleet(client: TestClient, world: ReportWorld) -> None:
    rows = rows_by_serial(client, world.admin_key, oem_code=world.oem.code)
    assert set(rows) == set(world.serials)
    everything = rows_by_serial(client, world.admin_key)
    assert set(world.serials) | {world.other_serial} <= set(everything)


def test_operator_keys_get_403_for_reports_and_passports(
    client: TestClient, world: ReportWorld
) -> None:
    headers = auth(world.operator_key)
    assert_problem(client.get("/v1/reports/fleet-summary", headers=headers), 403,
                   "ReportsForbidden")  # fmt: skip
    assert_problem(client.get("/v1/reports/batteries", headers=headers), 403, "ReportsForbidden")
    assert_problem(
        client.get(f"/v1/batteries/{world.serials[0]}/passport", headers=headers),
        403,
        "ReportsForbidden",
    )


def test_reports_need_an_api_key(client: TestClient) -> None:
    assert_problem(client.get("/v1/reports/fleet-summary"), 401, "Unauthorized")


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": "2026-03-02", "to": "2026-03-01"}, "InvalidWindow"),
        ({"from": "0001-01-01", "to": "2026-03-01"}, "InvalidWindow"),
        ({"to": "9999-12-31"}, "InvalidWindow"),
        ({"from": "yesterday"}, "ValidationError"),
        ({"oem_code": "NO-SUCH-OEM"}, "UnknownOem"),
        ({"max_soh": "120"}, "ValidationError"),
    ],
)
def test_bad_parameters_get_a_precise_4xx(
    client: TestClient, world: ReportWorld, params: dict[str, str], code: str
) -> None:
    for path in ("/v1/reports/batteries", "/v1/reports/fleet-summary"):
        if "max_soh" in params and path.endswith("summary"):
            continue
        assert_problem(client.get(path, headers=auth(world.admin_key), params=params), 422, code)


def test_unknown_pack_type_and_operator_org_as_oem_code_are_refused(
    client: TestClient, world: ReportWorld, session: Session
) -> None:
    headers = auth(world.admin_key)
    assert_problem(
        client.get("/v1/reports/batteries", headers=headers, params={"pack_type": "NOPE"}),
        422,
        "UnknownPackType",
    )
    operator_code = factories.make_org(session).code
    assert_problem(
        client.get("/v1/reports/fleet-summary", headers=headers,
                   params={"oem_code": operator_code}),
        422,
        "UnknownOem",
    )  # fmt: skip


def test_pack_type_and_soh_filters_select_rows(client: TestClient, world: ReportWorld) -> None:
    rows = rows_by_serial(client, world.oem_key, pack_type=world.pack.code)
    assert set(rows) == set(world.serials)
    low = rows_by_serial(client, world.oem_key, max_soh=96.0)
    assert set(low) == {world.fast_fader}
    high = rows_by_serial(client, world.oem_key, min_soh=96.0)
    assert set(high) == set(world.serials[:-2])


def test_batteries_report_pages_and_csv_hold_the_same_rows(
    client: TestClient, world: ReportWorld
) -> None:
    headers = auth(world.oem_key)
    paged = walk_pages(client, "/v1/reports/batteries", headers, 3, "serial", window())
    assert paged == sorted(world.serials)
    response = client.get(
        "/v1/reports/batteries", headers={**headers, "Accept": "text/csv"}, params=window()
    )
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["serial"] for r in rows] == paged
    fader = next(r for r in rows if r["serial"] == world.fast_fader)
    as_json = rows_by_serial(client, world.oem_key)[world.fast_fader]
    assert float(fader["capacity_fade_pct_per_1000_cycles"]) == pytest.approx(
        as_json["capacity_fade_pct_per_1000_cycles"]
    )
    assert fader["max_temp_c"] == str(as_json["max_temp_c"])


def test_empty_window_gives_empty_figures_not_errors(
    client: TestClient, world: ReportWorld
) -> None:
    params = {"from": "2001-01-01", "to": "2001-01-31"}
    summary = client.get("/v1/reports/fleet-summary", headers=auth(world.oem_key), params=params)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["counts"]["total"] == len(world.serials)
    assert body["soh_histogram"] == []
    assert body["soh_by_cycles"] == []
    assert body["energy_charged_kwh"] == 0
    assert body["swaps"]["completed"] == 0
    assert body["anomalies"] == []
    rows = rows_by_serial(client, world.oem_key, **params)
    assert all(r["soh_end_pct"] is None and r["charging_sessions"] == 0 for r in rows.values())


# ---------------------------------------------------------------- summary, anomalies, passport


def test_fleet_summary_histogram_and_percentiles_cover_the_reporting_batteries(
    client: TestClient, world: ReportWorld
) -> None:
    body = client.get(
        "/v1/reports/fleet-summary", headers=auth(world.oem_key), params=window()
    ).json()
    reporting = len(world.serials) - 1
    assert body["batteries_reporting"] == reporting
    assert sum(b["batteries"] for b in body["soh_histogram"]) == reporting
    assert sum(b["batteries"] for b in body["soh_by_cycles"]) == reporting
    for b in body["soh_by_cycles"]:
        assert b["soh_p10_pct"] <= b["soh_median_pct"] <= b["soh_p90_pct"]
    assert body["energy_charged_kwh"] == pytest.approx(30.0)
    assert body["counts"]["by_pack_type"] == {world.pack.code: len(world.serials)}


def test_anomalies_list_the_planted_fast_fader_and_recommend_without_quarantining(
    client: TestClient, world: ReportWorld, session: Session
) -> None:
    body = client.get(
        "/v1/reports/fleet-summary", headers=auth(world.oem_key), params=window()
    ).json()
    flagged = {(a["serial"], a["kind"]) for a in body["anomalies"]}
    assert flagged == {(world.fast_fader, "fast_fade")}

    start = window_start().date()
    recorded = refresh_recommendations(
        session, day_from=start, day_to=start + timedelta(days=DAYS + 1)
    )
    assert recorded >= 1
    rows = rows_by_serial(client, world.oem_key)
    assert rows[world.fast_fader]["quarantine_recommended"] is True
    assert not any(r["quarantine_recommended"] for s, r in rows.items() if s != world.fast_fader)
    battery = session.scalar(select(Battery).where(Battery.serial == world.fast_fader))
    assert battery is not None
    assert battery.state is BatteryState.in_service
    passport = client.get(
        f"/v1/batteries/{world.fast_fader}/passport", headers=auth(world.oem_key)
    ).json()
    assert [r["kind"] for r in passport["quarantine_recommendations"]] == ["fast_fade"]


SetMaxAge = Callable[[float], None]


@pytest.fixture
def snapshot_max_age(monkeypatch: pytest.MonkeyPatch) -> Iterator[SetMaxAge]:
    def set_max_age(seconds: float) -> None:
        monkeypatch.setenv("SWAPFLEET_REPORT_SNAPSHOT_MAX_AGE_S", str(seconds))
        get_settings.cache_clear()

    yield set_max_age
    # Before monkeypatch restores the environment: the next test reads it afresh.
    get_settings.cache_clear()


def flagged(client: TestClient, world: ReportWorld) -> set[str]:
    """Serials the OEM's fleet summary flags as anomalies."""
    response = client.get("/v1/reports/fleet-summary", headers=auth(world.oem_key), params=window())
    assert response.status_code == 200, response.text
    return {a["serial"] for a in response.json()["anomalies"]}


def test_summary_anomalies_follow_new_data_despite_the_snapshot(
    client: TestClient, world: ReportWorld, session: Session, snapshot_max_age: SetMaxAge
) -> None:
    snapshot_max_age(0)
    late = factories.make_battery(
        session, world.pack, factories.make_org(session), oem=world.oem
    ).serial

    assert flagged(client, world) == {world.fast_fader}
    snapshots = session.execute(text("SELECT count(*) FROM report_anomaly_snapshots")).scalar()
    assert snapshots == 1
    # The second call is served from the snapshot and must agree with the first.
    assert flagged(client, world) == {world.fast_fader}

    # Only telemetry changes: the snapshot's fingerprint no longer matches.
    history(session, world.station_id, late, FAST_FADE_AH, wobble=0.3)
    assert flagged(client, world) == {world.fast_fader, late}


@pytest.mark.parametrize("days", [DAYS + 1, 5])
def test_anomaly_inputs_equal_the_report_rows_bit_for_bit(
    session: Session, world: ReportWorld, days: int
) -> None:
    """The summary's snapshot fits its cohorts from a narrower query than the batteries
    report's; both must add the same values in the same order, or the figures would differ
    in their last digits between the two."""
    start = window_start().date()
    end = start + timedelta(days=days)
    full = list(iter_battery_rows(session, report_repo.BatteryQuery(start, end)))
    slim = report_repo.anomaly_inputs(session, start, end)
    assert [r.serial for r in slim] == [r.serial for r in full]
    compared = 0
    for a, b in zip(slim, full, strict=True):
        for column, value in dataclasses.asdict(a).items():
            # Exact equality, floats included.
            assert value == getattr(b, column), (a.serial, column, value, getattr(b, column))
            compared += value is not None and value != 0
    assert compared > 0
    as_anomalies = [anomaly for _, anomaly in find_anomalies(slim, end)]
    assert as_anomalies == [anomaly for _, anomaly in find_anomalies(full, end)]
    if days > 5:
        assert world.fast_fader in {a.serial for a in as_anomalies}


def test_passport_reports_measured_attributes_and_nulls_the_rest(
    client: TestClient, world: ReportWorld
) -> None:
    response = client.get(f"/v1/batteries/{world.serials[0]}/passport", headers=auth(world.oem_key))
    assert response.status_code == 200, response.text
    body = response.json()
    perf, durability = body["performance"], body["durability"]
    assert body["battery"]["rated_capacity_ah"] == NOMINAL_AH
    assert perf["remaining_capacity_ah"] is not None
    assert perf["capacity_fade_pct"] == pytest.approx(
        100 - perf["remaining_capacity_ah"] / NOMINAL_AH * 100
    )
    assert perf["state_of_certified_energy_pct"] == pytest.approx(
        perf["remaining_energy_kwh"] / body["battery"]["rated_energy_kwh"] * 100
    )
    assert perf["internal_resistance_increase_pct"] == pytest.approx((20.36 / 20.0 - 1) * 100)
    assert durability["energy_throughput_kwh"] == pytest.approx(30.0)
    assert durability["capacity_throughput_ah"] > 0
    for name in body["not_derivable"]:
        section, attribute = name.split(".")
        assert attribute in body[section]
        assert body[section][attribute] is None
    assert "performance.remaining_power_capability_w" in body["not_derivable"]
    assert body["negative_events"]["quarantines"] == []


def test_passport_of_a_battery_without_telemetry_holds_no_number_no_data_supports(
    client: TestClient, world: ReportWorld
) -> None:
    """Issue 14 item 7: no throughput or time at temperature as 0.0 for a battery that sent
    nothing; what it has is labelled as given at registration."""
    body = client.get(
        f"/v1/batteries/{world.silent_serial}/passport", headers=auth(world.admin_key)
    ).json()
    perf, durability = body["performance"], body["durability"]
    for name in (
        "remaining_capacity_ah", "state_of_certified_energy_pct", "state_of_health_pct",
        "internal_resistance_current_mohm", "capacity_fade_pct_per_year",
    ):  # fmt: skip
        assert perf[name] is None, name
    for name in (
        "energy_throughput_kwh", "energy_discharged_kwh", "capacity_throughput_ah",
        "time_above_45c_h", "time_below_0c_h", "max_temp_c", "throughput_from", "throughput_to",
    ):  # fmt: skip
        assert durability[name] is None, name
        assert f"durability.{name}" in body["not_derivable"]
    assert perf["health_records"] == 0
    assert perf["capacity_records"] == 0
    # The factory registers it with 10 cycles: given at registration, so labelled as such.
    assert durability["equivalent_full_cycles"] == 10.0
    assert durability["equivalent_full_cycles_source"] == "registration"
    assert durability["equivalent_full_cycles_measured_at"] is None
    # Every number left is registry data (ratings, cycles given at registration) or a count.
    numbers = {
        f"{section}.{name}"
        for section in ("performance", "durability", "negative_events")
        for name, value in body[section].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    assert numbers == {
        "performance.health_records",
        "performance.capacity_records",
        "durability.equivalent_full_cycles",
        "negative_events.swaps_refused_for_health",
    }


def test_passport_soh_given_at_registration_is_labelled_so(
    client: TestClient, session: Session, world: ReportWorld
) -> None:
    battery = factories.make_battery(session, world.pack, world.oem, oem=world.oem, soh_pct=88.0)
    body = client.get(
        f"/v1/batteries/{battery.serial}/passport", headers=auth(world.admin_key)
    ).json()
    perf = body["performance"]
    assert perf["state_of_health_pct"] == 88.0
    assert perf["state_of_health_source"] == "registration"
    assert perf["state_of_health_measured_at"] is None
    assert (
        "given at registration"
        in body["not_derivable_reasons"]["performance.state_of_health_measured_at"]
    )


def test_passport_soh_says_when_the_bms_measured_it(client: TestClient, world: ReportWorld) -> None:
    body = client.get(
        f"/v1/batteries/{world.serials[0]}/passport", headers=auth(world.oem_key)
    ).json()
    perf = body["performance"]
    last_day = (DAYS - 1) // 4 * 4
    last_health = window_start() + timedelta(days=last_day, hours=10)
    assert perf["state_of_health_source"] == "health_record"
    assert datetime.fromisoformat(perf["state_of_health_measured_at"]) == last_health
    assert perf["health_records"] == len(range(0, DAYS, 4))
    assert body["durability"]["equivalent_full_cycles"] == round(100 + CYCLES_PER_DAY * last_day)
    assert (
        body["durability"]["equivalent_full_cycles_measured_at"]
        == perf["state_of_health_measured_at"]
    )


def test_every_null_of_every_passport_is_listed_with_a_reason(
    client: TestClient, world: ReportWorld
) -> None:
    def nulls(value: object, prefix: str) -> list[str]:
        if not isinstance(value, dict):
            return []
        out: list[str] = []
        for name, v in value.items():
            if v is None:
                out.append(prefix + name)
            else:
                out += nulls(v, f"{prefix}{name}.")
        return out

    checked = 0
    for serial in [*world.serials, world.other_serial]:
        body = client.get(f"/v1/batteries/{serial}/passport", headers=auth(world.admin_key)).json()
        null = nulls(body, "")
        assert sorted(body["not_derivable"]) == sorted(null), serial
        assert set(body["not_derivable_reasons"]) == set(null), serial
        unexplained = {k for k, v in body["not_derivable_reasons"].items() if v == UNEXPLAINED}
        assert not unexplained, (serial, unexplained)
        checked += len(null)
    assert checked > 0


def test_passport_lists_quarantines_as_negative_events(
    client: TestClient, world: ReportWorld
) -> None:
    serial = world.serials[1]
    response = client.post(
        f"/v1/batteries/{serial}/quarantine",
        headers=auth(world.admin_key),
        json={"reason": "swollen case"},
    )
    assert response.status_code == 200, response.text
    body = client.get(f"/v1/batteries/{serial}/passport", headers=auth(world.oem_key)).json()
    assert [e["note"] for e in body["negative_events"]["quarantines"]] == ["swollen case"]
    summary = client.get(
        "/v1/reports/fleet-summary", headers=auth(world.oem_key), params=window()
    ).json()
    assert [q["serial"] for q in summary["quarantined"]] == [serial]
    assert summary["counts"]["quarantined"] == 1


def test_a_young_snapshot_is_served_without_checking_for_new_data(
    client: TestClient, world: ReportWorld, session: Session, snapshot_max_age: SetMaxAge
) -> None:
    """The freshness bound (SWAPFLEET_REPORT_SNAPSHOT_MAX_AGE_S): within it, a summary
    serves the snapshot as it is; once it has passed, the new data shows."""
    snapshot_max_age(3600)
    late = factories.make_battery(
        session, world.pack, factories.make_org(session), oem=world.oem
    ).serial

    assert flagged(client, world) == {world.fast_fader}
    history(session, world.station_id, late, FAST_FADE_AH, wobble=0.3)
    assert flagged(client, world) == {world.fast_fader}, (
        "within the bound the snapshot is served as is"
    )
    session.execute(
        text("UPDATE report_anomaly_snapshots SET computed_at = now() - INTERVAL '2 hours'")
    )
    assert flagged(client, world) == {world.fast_fader, late}
