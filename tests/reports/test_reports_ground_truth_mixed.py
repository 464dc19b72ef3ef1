"""The reports against the ground truth of the `mixed` scenario (simulators/scenarios.py),
seed 1: 3 stations (one per segment), 50 vehicles, 240 days
(tests/fixtures/scenario_ground_truth.py)."""

import pytest

from tests.fixtures.ground_truth_world import World
from tests.fixtures.scenario_ground_truth import ScenarioGroundTruth

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow, pytest.mark.xdist_group("gt_mixed")]


class TestGroundTruthMixed(ScenarioGroundTruth):
    scenario = "mixed"
    seed = 1
    stations = 3
    vehicles = 50
    days = 240

    @pytest.mark.xfail(
        strict=True,
        reason="2026-12-07, not investigated yet: the fast-fading gt1-BB-HT141-0054 is not "
        "flagged; its cohort (IVECO or FOTON x HT141) has 5 packs, one of them the imbalanced "
        "gt1-BB-HT141-0006 fading 1.8 x, which the cohort's expected-fade line is fitted on",
    )
    def test_anomalies_include_every_planted_fault(self, world: World) -> None:
        super().test_anomalies_include_every_planted_fault(world)
