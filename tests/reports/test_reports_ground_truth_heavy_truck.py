"""The reports against the ground truth of the `heavy-truck` scenario (simulators/scenarios.py),
seed 2: 2 station(s), 12 vehicles, 240 days (tests/fixtures/scenario_ground_truth.py)."""

import pytest

from tests.fixtures.scenario_ground_truth import ScenarioGroundTruth

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow, pytest.mark.xdist_group("gt_heavy_truck")]


class TestGroundTruthHeavyTruck(ScenarioGroundTruth):
    scenario = "heavy-truck"
    seed = 2
    stations = 2
    vehicles = 12
    days = 240
