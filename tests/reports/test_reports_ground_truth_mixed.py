"""The reports against the ground truth of the `mixed` scenario (simulators/scenarios.py),
seed 1: 3 stations (one per segment), 50 vehicles, 240 days
(tests/fixtures/scenario_ground_truth.py)."""

import pytest

from tests.fixtures.scenario_ground_truth import ScenarioGroundTruth

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow, pytest.mark.xdist_group("gt_mixed")]


class TestGroundTruthMixed(ScenarioGroundTruth):
    scenario = "mixed"
    seed = 1
    stations = 3
    vehicles = 50
    days = 240
