"""The HTML report as a person sees it: headless Chromium (Debian's package, /usr/bin/chromium)
loads the saved page from a file and takes a screenshot, and the picture must hold the charts."""

import subprocess
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session

from app.core import clock
from app.reports.render import svg
from tests.fixtures.factories import auth
from tests.fixtures.report_html_data import build_report_fleet, window
from tests.fixtures.swap_world import build_swap_world

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 2000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed (apt-get install -y chromium; .ci/run does it)",
)


def rgb(hex_color: str) -> tuple[int, int, int]:
    value = hex_color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def over_white(hex_color: str, opacity: float) -> tuple[int, int, int]:
    r, g, b = rgb(hex_color)
    return tuple(round(c * opacity + 255 * (1 - opacity)) for c in (r, g, b))  # type: ignore[return-value]


def near(counts: Counter[tuple[int, int, int]], color: tuple[int, int, int], tol: int = 3) -> int:
    return sum(
        n
        for c, n in counts.items()
        if all(abs(a - b) <= tol for a, b in zip(c, color, strict=True))
    )


def screenshot(page: Path, out: Path, profile: Path) -> None:
    result = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={WIDTH},{HEIGHT}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.exists(), result.stderr[-2000:]


def test_html_report_renders_its_charts_in_headless_chromium(
    client: TestClient, session: Session, tmp_path: Path
) -> None:
    fleet = build_report_fleet(session)
    world = build_swap_world(session, charged_socs=(95.0, 50.0))
    client.post(
        "/v1/swaps",
        json=world.swap_body(installed_battery_serial=world.charged[1].serial),
        headers=auth(world.operator_key),
    )
    client.post("/v1/swaps", json=world.swap_body(), headers=auth(world.operator_key))
    # Up to today, so that the swaps just recorded are in the window.
    params = {**window(), "to": clock.today().isoformat()}
    response = client.get(
        "/v1/reports/fleet-summary.html", headers=auth(fleet.admin_key), params=params
    )
    assert response.status_code == 200, response.text
    page = tmp_path / "fleet-summary.html"
    page.write_text(response.text, encoding="utf-8")

    shot = tmp_path / "fleet-summary.png"
    screenshot(page, shot, tmp_path / "chromium-profile")

    assert shot.stat().st_size > 30_000
    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        colors = image.convert("RGB").getcolors(maxcolors=WIDTH * HEIGHT)
    assert colors is not None
    pixels: Counter[tuple[int, int, int]] = Counter()
    for n, color in colors:
        assert isinstance(color, tuple)
        pixels[(color[0], color[1], color[2])] += n
    # Text, anti-aliasing and chart fills give a real page hundreds of colours; a blank or
    # error page has a handful.
    assert len(pixels) > 200
    # The histogram's bars, the fade curve's median and band, and the rejected-swap bars are
    # drawn: their colours cover real areas of the picture.
    assert near(pixels, rgb(svg.BAR)) > 5_000
    assert near(pixels, rgb(svg.ALERT)) > 500
    assert near(pixels, rgb(svg.LINE)) > 300
    assert near(pixels, over_white(svg.BAND, 0.55)) > 5_000
