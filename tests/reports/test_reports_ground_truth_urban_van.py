"""The reports against the ground truth of the `urban-van` scenario (simulators/scenarios.py),
seed 5: 1 station(s), 20 vehicles, 240 days (tests/fixtures/scenario_ground_truth.py)."""

import pytest

from tests.fixtures.scenario_ground_truth import ScenarioGroundTruth

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow, pytest.mark.xdist_group("gt_urban_van")]


class TestGroundTruthUrbanVan(ScenarioGroundTruth):
    scenario = "urban-van"
    seed = 5
    stations = 1
    vehicles = 20
    days = 240
