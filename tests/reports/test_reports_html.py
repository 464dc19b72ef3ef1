"""The readable fleet report: GET /v1/reports/fleet-summary.html and its SVG charts."""

import math
import re
from html import escape
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.reports.render import svg
from tests.fixtures.factories import assert_problem, auth
from tests.fixtures.report_html_data import HOSTILE, ReportFleet, build_report_fleet, window
from tests.fixtures.swap_world import build_swap_world

PATH = "/v1/reports/fleet-summary.html"


@pytest.fixture
def fleet(session: Session) -> ReportFleet:
    return build_report_fleet(session)


class Tags(HTMLParser):
    """Start tags with their attributes, and the text of every <svg>'s aria-label."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    tags.close()
    return tags


def get_report(client: TestClient, key: str, **params: str) -> str:
    response = client.get(PATH, headers=auth(key), params={**window(), **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page: str = response.text
    return page


def test_html_report_is_a_page_with_inline_svg_charts_and_headline_figures(
    client: TestClient, fleet: ReportFleet
) -> None:
    response = client.get(PATH, headers=auth(fleet.oem_key), params=window())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in response.headers["content-security-policy"]
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    page = response.text
    tags = parse(page)
    labels = {a["aria-label"] for a in tags.named("svg")}
    assert labels == {
        "Histogram of state of health",
        "Median state of health against full-equivalent cycles",
        "Median state of health against age",
        "Swaps by outcome",
        "Rejected swaps by reason",
    }
    # The fade curve has a percentile band and a median line; the histogram has bars.
    assert len(tags.named("polygon")) == 2
    assert len(tags.named("polyline")) == 2
    assert len(tags.named("rect")) >= 5
    assert f">{len(fleet.serials)}<" in page  # batteries in the fleet
    assert "batteries in the fleet" in page
    assert fleet.oem.code in page


def test_histogram_bars_add_up_to_the_reporting_batteries(
    client: TestClient, fleet: ReportFleet
) -> None:
    page = get_report(client, fleet.oem_key)
    histogram = page.split('aria-label="Histogram of state of health"')[1].split("</svg>")[0]
    counts = [int(n) for n in re.findall(r"<title>SoH [^<]*: (\d+) batteries</title>", histogram)]
    assert sum(counts) == len(fleet.serials)
    # Bins run without gaps up to 100 %.
    assert "95–100 %" in histogram


def test_html_report_has_no_script_and_no_external_asset(
    client: TestClient, fleet: ReportFleet
) -> None:
    page = get_report(client, fleet.oem_key)
    tags = parse(page)
    assert not tags.named("script")
    assert not tags.named("link")
    assert not tags.named("img")
    for _, attrs in tags.tags:
        assert "src" not in attrs
        assert "href" not in attrs
        assert not any(name.startswith("on") for name in attrs)
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"] * 5


def test_html_report_escapes_hostile_strings(client: TestClient, fleet: ReportFleet) -> None:
    page = get_report(client, fleet.oem_key)
    assert HOSTILE not in page
    assert "<script" not in page
    assert escape(HOSTILE) in page
    # The anomalies table names the fast fader with its (escaped) pack type.
    anomalies = page.split("<h2>Anomalies</h2>")[1].split("</section>")[0]
    assert fleet.fast_fader in anomalies
    assert escape(fleet.pack.code) in anomalies
    assert "Fast capacity fade" in anomalies


def test_oem_html_report_never_shows_another_oems_batteries(
    client: TestClient, fleet: ReportFleet
) -> None:
    own = get_report(client, fleet.oem_key)
    other = get_report(client, fleet.other_oem_key)
    admin_named = get_report(client, fleet.admin_key, oem_code=fleet.oem.code)
    for page in (own, admin_named):
        assert fleet.fast_fader in page
        assert not any(s in page for s in fleet.other_serials)
    assert not any(s in other for s in fleet.serials)
    # The other OEM's own page does list its quarantined battery: the check above can bite.
    assert fleet.other_serials[1] in other


def test_html_report_of_an_empty_window_says_so_instead_of_failing(
    client: TestClient, fleet: ReportFleet
) -> None:
    response = client.get(
        PATH, headers=auth(fleet.oem_key), params={"from": "2001-01-01", "to": "2001-01-31"}
    )
    assert response.status_code == 200, response.text
    page = response.text
    assert page.count("No battery reported its health in this window") == 2
    assert "No swaps in this window" in page
    assert "No anomalies" in page
    assert len(parse(page).named("svg")) == 5


def test_html_report_draws_swaps_and_rejections_by_reason(
    client: TestClient, session: Session
) -> None:
    world = build_swap_world(session, charged_socs=(95.0, 50.0))
    low = world.charged[1]
    response = client.post(
        "/v1/swaps",
        json=world.swap_body(installed_battery_serial=low.serial),
        headers=auth(world.operator_key),
    )
    assert response.status_code == 409, response.text
    response = client.post("/v1/swaps", json=world.swap_body(), headers=auth(world.operator_key))
    assert response.status_code == 201, response.text
    summary = client.get("/v1/reports/fleet-summary", headers=auth(world.oem_key)).json()
    reasons = summary["swaps"]["rejected_by_reason"]
    assert summary["swaps"]["completed"] == 1
    assert sum(reasons.values()) == 1

    page = client.get(PATH, headers=auth(world.oem_key)).text
    outcomes = page.split('aria-label="Swaps by outcome"')[1].split("</svg>")[0]
    assert "<title>completed: 1</title>" in outcomes
    assert "<title>rejected: 1</title>" in outcomes
    rejected = page.split('aria-label="Rejected swaps by reason"')[1].split("</svg>")[0]
    (reason,) = reasons
    assert f"<title>{escape(reason)}: 1</title>" in rejected


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"from": "2026-03-02", "to": "2026-03-01"}, 422, "InvalidWindow"),
        ({"to": "9999-12-31"}, 422, "InvalidWindow"),
        ({"from": "yesterday"}, 422, "ValidationError"),
        ({"oem_code": "NO-SUCH-OEM"}, 422, "UnknownOem"),
        ({"cycle_bin_width": "0"}, 422, "ValidationError"),
        ({"age_bin_days": "0"}, 422, "ValidationError"),
    ],
)
def test_html_report_bad_parameters_get_a_problem_not_a_page(
    client: TestClient, fleet: ReportFleet, params: dict[str, str], status: int, code: str
) -> None:
    assert_problem(client.get(PATH, headers=auth(fleet.admin_key), params=params), status, code)


def test_html_report_refuses_operators_other_oems_and_missing_keys(
    client: TestClient, fleet: ReportFleet
) -> None:
    assert_problem(client.get(PATH), 401, "Unauthorized")
    assert_problem(client.get(PATH, headers=auth(fleet.operator_key)), 403, "ReportsForbidden")
    assert_problem(
        client.get(PATH, headers=auth(fleet.other_oem_key), params={"oem_code": fleet.oem.code}),
        403,
        "ReportsForbidden",
    )


# ---------------------------------------------------------------- the SVG module


def test_nice_ticks_cover_the_data_with_round_steps() -> None:
    lo, hi, ticks = svg.nice_ticks(0, 553)
    assert (lo, hi) == (0, 600)
    assert ticks == [0, 200, 400, 600]
    for data_lo, data_hi in [(0, 7), (0.3, 0.9), (120, 2870), (-3, 41), (0, 1e6)]:
        lo, hi, ticks = svg.nice_ticks(data_lo, data_hi)
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert lo <= data_lo
        assert hi >= data_hi
        assert (ticks[0], ticks[-1]) == (lo, hi)
        assert 3 <= len(ticks) <= 11
        assert any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5))
    lo, hi, ticks = svg.nice_ticks(82.4, 99.1)
    assert (lo, hi) == (80, 100)
    assert ticks == [80, 85, 90, 95, 100]
    assert svg.nice_ticks(0, 1, integer=True) == (0, 1, [0, 1])
    assert svg.nice_ticks(0, 12, integer=True)[2] == [0, 2, 4, 6, 8, 10, 12]
    lo, hi, ticks = svg.nice_ticks(5.0, 5.0)
    assert lo < 5.0 < hi
    assert len(ticks) >= 2


def test_svg_charts_escape_every_label() -> None:
    chart = svg.bar_chart(
        [svg.Bar('<b onload="x">', 3)], label="a<b", x_title="x&y", y_title="\"q'"
    )
    assert "<b " not in chart
    assert "&lt;b onload=&quot;x&quot;&gt;" in chart
    assert "a&lt;b" in chart
    assert "x&amp;y" in chart
    assert "&quot;q&#x27;" in chart
    band = svg.band_chart(
        [svg.BandPoint(1, 2, 3, 4, hint="<i>")], label="<l>", x_title="<x>", y_title="<y>"
    )
    assert "<i>" not in band
    assert "<l>" not in band
    assert "<x>" not in band


def test_band_chart_draws_the_band_between_low_and_high() -> None:
    chart = svg.band_chart(
        [svg.BandPoint(0, 90, 95, 99), svg.BandPoint(100, 80, 85, 90)],
        label="fade",
        x_title="cycles",
        y_title="SoH",
    )
    (polygon,) = re.findall(r'<polygon points="([^"]+)"', chart)
    ys = [float(p.split(",")[1]) for p in polygon.split()]
    # Upper edge first (smaller y in SVG), then the lower edge back.
    assert ys[0] < ys[3]
    assert ys[1] < ys[2]
    (median,) = re.findall(r'<polyline points="([^"]+)"', chart)
    mid_ys = [float(p.split(",")[1]) for p in median.split()]
    assert ys[0] < mid_ys[0] < ys[3]
