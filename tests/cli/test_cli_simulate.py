"""`swapfleet simulate` runs on the backend's clock (app.core.clock), not the wall clock: a
backend refuses records from its future and records older than its retention, so a simulator
on the wall clock beside a backend whose clock is shifted sends records it dead-letters."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.core import clock
from app.core.config import get_settings

runner = CliRunner()

# Further from the wall clock than any retention (charging: 400 days), whatever --clock the
# suite runs with.
SHIFT_S = 1000 * 86_400.0


def test_simulate_starts_its_days_before_the_backends_now_not_the_wall_clocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWAPFLEET_CLOCK_OFFSET_S", str(clock.offset().total_seconds() + SHIFT_S))
    get_settings.cache_clear()
    try:
        expected = clock.now() - timedelta(days=1)
        result = runner.invoke(
            cli,
            ["simulate", "--offline", "--stations", "1", "--vehicles", "2", "--slots", "2",
             "--days", "1", "--no-progress"],
        )  # fmt: skip
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    found = re.search(r"simulated\s*│?\s*(\d{4}-\d\d-\d\d \d\d:\d\d) ->", result.output)
    assert found is not None, result.output
    start = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert abs((start - expected).total_seconds()) <= 120, (start, expected)
