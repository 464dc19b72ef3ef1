"""`swapfleet simulate --scenario NAME` against a real `swapfleet api` process: the scenario's
fleet registers itself (its operators, pack types at their kWh, models, stations with their
slots) and every swap it made is in the backend."""

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.models import KeyRole
from simulators.scenarios import SCENARIOS
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.api_server import ApiServer, running_api
from tests.fixtures.committed import truncate_all
from tests.fixtures.factories import make_key
from tests.fixtures.simulate_cli import completed_swaps, run_simulate, summary_count

pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("scenarios_cli")]


@pytest.fixture(scope="module")
def api(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    log = tmp_path_factory.mktemp("sim_scenarios") / "api.log"
    with running_api(TEST_DATABASE_URL, log) as server:
        yield server
    # This module's worlds are committed: gone before the worker's next module.
    truncate_all(engine)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_swapfleet_simulate_scenario_drives_the_real_backend(
    name: str, engine: Engine, api: ApiServer
) -> None:
    prefix = f"sc{uuid.uuid4().hex[:6]}"
    with Session(engine) as session, session.begin():
        admin = make_key(session, KeyRole.admin)
    output = run_simulate(
        "--scenario", name, "--days", "0.5", "--seed", "3", "--prefix", prefix,
        "--api-url", api.base_url, "--api-key", admin, "--no-progress",
    )  # fmt: skip
    spec = SCENARIOS[name]
    with engine.connect() as conn:
        stations = conn.execute(
            text("SELECT count(*) FROM stations WHERE code LIKE :p"), {"p": f"{prefix}%"}
        ).scalar_one()
        energies = conn.execute(
            text("SELECT code, nominal_energy_kwh FROM pack_types WHERE code LIKE :p"),
            {"p": f"{prefix}%"},
        ).all()
    assert completed_swaps(engine, prefix) == summary_count(output, "swaps completed") > 0
    assert stations == spec.stations
    kwh = {code.removeprefix(f"{prefix}-"): float(e) for code, e in energies}
    assert kwh == {p.code: round(p.nominal_energy_kwh, 3) for p in spec.catalog().packs}
