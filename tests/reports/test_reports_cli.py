"""`swapfleet report`, `rebuild-aggregates` and `detect-anomalies` against a database of their own.

The commands commit (they run outside any request), so the fleet is built once, committed, in
a freshly migrated database of this module, and the settings point at it.
"""

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from html import escape
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from app.core.config import get_settings
from app.core.db import get_engine, get_session_factory
from app.core.migrate import upgrade
from app.reports.cli import report_cli
from tests.conftest import TEST_DATABASE_URL, recreate_database
from tests.fixtures.report_html_data import (
    DAYS,
    HOSTILE,
    ReportFleet,
    build_report_fleet,
    window_start,
)

DB = TEST_DATABASE_URL.rsplit("/", 1)[1] + "_reportcli"

runner = CliRunner()


def clear_cached_settings() -> None:
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_session_factory.cache_clear()
    get_engine.cache_clear()
    get_settings.cache_clear()


@contextmanager
def fleet_database(name: str) -> Iterator[ReportFleet]:
    url = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/" + name
    recreate_database(name)
    upgrade(url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWAPFLEET_DATABASE_URL", url)
        clear_cached_settings()
        with get_session_factory().begin() as session:
            built = build_report_fleet(session)
        yield built
        clear_cached_settings()


@pytest.fixture(scope="module")
def fleet() -> Iterator[ReportFleet]:
    """Read by many tests: none of them may change it."""
    with fleet_database(DB) as built:
        yield built


@pytest.fixture
def own_fleet() -> Iterator[ReportFleet]:
    """For a test that changes the data: its own database."""
    with fleet_database(DB + "_own") as built:
        yield built


def window_args() -> list[str]:
    start = window_start()
    return ["--from", start.isoformat(), "--to", (start + timedelta(days=DAYS + 1)).isoformat()]


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(report_cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_report_html_writes_a_self_contained_page_of_one_oems_fleet(
    fleet: ReportFleet, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    code, stdout, stderr = invoke(
        "report", "--oem", fleet.oem.code, "--format", "html", *window_args(), "--output", str(out)
    )
    assert code == 0, stderr
    assert stdout == ""
    assert str(out) in stderr
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 5
    assert fleet.fast_fader in page
    assert not any(s in page for s in fleet.other_serials)
    code, _, stderr = invoke(
        "report", "--oem", fleet.other_oem.code, *window_args(), "--output", str(out)
    )
    assert code == 0, stderr
    other = out.read_text(encoding="utf-8")
    assert fleet.other_serials[1] in other
    assert fleet.fast_fader not in other
    assert HOSTILE not in page
    assert escape(HOSTILE) in page
    assert "<script" not in page


def test_report_json_is_the_fleet_summary(fleet: ReportFleet) -> None:
    code, stdout, stderr = invoke(
        "report", "--oem", fleet.oem.code, "--format", "json", *window_args()
    )
    assert code == 0, stderr
    body = json.loads(stdout)
    assert body["window"]["oem_code"] == fleet.oem.code
    assert body["window"]["day_from"] == window_start().isoformat()
    assert body["counts"]["total"] == len(fleet.serials)
    assert body["batteries_reporting"] == len(fleet.serials)
    assert [(a["serial"], a["kind"]) for a in body["anomalies"]] == [
        (fleet.fast_fader, "fast_fade")
    ]


def test_report_csv_has_a_row_per_battery_of_the_oem(fleet: ReportFleet) -> None:
    code, stdout, stderr = invoke(
        "report", "--oem", fleet.other_oem.code, "--format", "csv", *window_args()
    )
    assert code == 0, stderr
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert [r["serial"] for r in rows] == sorted(fleet.other_serials)
    assert all(float(r["capacity_fade_pct_per_1000_cycles"]) > 0 for r in rows)


def test_report_without_oem_covers_the_whole_fleet(fleet: ReportFleet) -> None:
    code, stdout, stderr = invoke("report", "--format", "csv", *window_args())
    assert code == 0, stderr
    serials = {r["serial"] for r in csv.DictReader(io.StringIO(stdout))}
    assert serials == set(fleet.serials) | set(fleet.other_serials)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--oem", "NO-SUCH-OEM"], "no OEM organization with code 'NO-SUCH-OEM'"),
        (["--from", "2026-03-02", "--to", "2026-03-01"], "is after to"),
    ],
)
def test_report_refuses_bad_parameters_with_a_message(
    fleet: ReportFleet, args: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "never.html"
    code, stdout, stderr = invoke("report", *args, "--output", str(out))
    assert code == 1
    assert message in stderr
    assert stderr.startswith("error: ")
    assert not out.exists()


def test_report_rejects_an_unknown_format(fleet: ReportFleet) -> None:
    code, _, stderr = invoke("report", "--format", "pdf")
    assert code == 2
    assert "pdf" in stderr


def csv_figures(text: str, *, approx: bool = False) -> list[dict[str, object]]:
    def value(cell: str) -> object:
        try:
            number = float(cell)
        except ValueError:
            return cell
        # abs: a fade interval's end is the rate minus t times its standard error, two
        # numbers of one size, so summation order moves its last digits by more than
        # 1e-9 relative (seen with the clock at 2027-03-01, where the window splits into
        # whole months and edge days differently); 1e-6 is far below any figure's precision.
        return pytest.approx(number, rel=1e-9, abs=1e-6) if approx else number

    return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def test_rebuild_aggregates_restores_the_report_from_raw_records(own_fleet: ReportFleet) -> None:
    code, before, stderr = invoke("report", "--format", "csv", *window_args())
    assert code == 0, stderr
    # Both levels: the report reads whole months from battery_monthly, the edges from daily.
    with psycopg.connect(get_settings().database_url or "") as conn:
        conn.execute("DELETE FROM battery_daily")
        conn.execute("DELETE FROM battery_monthly")
    code, emptied, _ = invoke("report", "--format", "csv", *window_args())
    assert all(r["capacity_records"] == "0" for r in csv.DictReader(io.StringIO(emptied)))

    code, stdout, stderr = invoke("rebuild-aggregates", *window_args())
    assert code == 0, stderr
    assert "battery-days" in stdout
    code, after, stderr = invoke("report", "--format", "csv", *window_args())
    assert code == 0, stderr
    # The same figures, up to the last bits of floating-point sums taken in another order.
    assert csv_figures(after) == csv_figures(before, approx=True)


def test_rebuild_aggregates_refuses_a_reversed_window(fleet: ReportFleet) -> None:
    code, _, stderr = invoke("rebuild-aggregates", "--from", "2026-03-02", "--to", "2026-03-01")
    assert code == 1
    assert "is after" in stderr


def test_detect_anomalies_records_a_recommendation_without_quarantining(
    own_fleet: ReportFleet,
) -> None:
    fleet = own_fleet
    code, stdout, stderr = invoke("detect-anomalies", *window_args())
    assert code == 0, stderr
    assert stdout.startswith("1 anomalies recorded")
    code, out, stderr = invoke("report", "--format", "csv", "--oem", fleet.oem.code, *window_args())
    rows = {r["serial"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows[fleet.fast_fader]["quarantine_recommended"] == "True"
    assert rows[fleet.fast_fader]["state"] == "in_service"
    assert not any(
        r["quarantine_recommended"] == "True" for s, r in rows.items() if s != fleet.fast_fader
    )
