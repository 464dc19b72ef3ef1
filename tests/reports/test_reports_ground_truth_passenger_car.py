"""The reports against the ground truth of the `passenger-car` scenario (simulators/scenarios.py),
seed 1: 1 station(s), 40 vehicles, 240 days (tests/fixtures/scenario_ground_truth.py)."""

import pytest

from tests.fixtures.scenario_ground_truth import ScenarioGroundTruth

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.slow,
    pytest.mark.xdist_group("gt_passenger_car"),
]


class TestGroundTruthPassengerCar(ScenarioGroundTruth):
    scenario = "passenger-car"
    seed = 1
    stations = 1
    vehicles = 40
    days = 240
