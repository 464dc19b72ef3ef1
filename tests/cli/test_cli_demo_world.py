"""One world (issue 15): the demo network `swapfleet seed-demo` registers is the world
`swapfleet up`'s simulator runs, so the simulator finds every organization, pack type, model,
station, vehicle and battery registered, and creates nothing beside it."""

import typer
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.cli.demo import demo_network
from app.local.demo import seed_demo
from app.models import KeyRole, Station
from simulators.backend import RestFleetRegistrar
from simulators.cli import simulate_cli, up_simulator_command
from simulators.fleet import Fleet
from simulators.scenarios import SCENARIOS
from simulators.sinks import InMemorySink
from tests.fixtures.factories import auth, make_key


def up_fleet() -> Fleet:
    """The fleet `up`'s simulator child builds, from the arguments `up` gives it."""
    argv, _ = up_simulator_command("http://127.0.0.1:8000", "sk", "mqtt://127.0.0.1:1883")
    params = typer.main.get_command(simulate_cli).make_context("simulate", argv[4:]).params
    config = SCENARIOS[params["scenario"]].config(
        stations=params["stations"], vehicles=params["vehicles"], seed=params["seed"],
        code_prefix=params["prefix"], faulty_share=params["faulty_share"], days=0.0,
    )  # fmt: skip
    return Fleet(config, InMemorySink(keep_records=False))


def test_up_simulates_the_network_seed_demo_registered(
    session: Session, client: TestClient
) -> None:
    summary = seed_demo(session, demo_network())
    assert summary.created_any
    client.headers.update(auth(make_key(session, KeyRole.admin)))
    report = RestFleetRegistrar(client).register(up_fleet().manifest)
    assert report.created == 0
    fleet = up_fleet()
    assert report.existing == sum(
        len(items) for items in (
            fleet.manifest.organizations, fleet.manifest.pack_types,
            fleet.manifest.vehicle_models, fleet.manifest.stations, fleet.manifest.vehicles,
            fleet.manifest.batteries,
        )
    )  # fmt: skip
    # Every battery is where the seed put it, as the simulator has it.
    assert len(report.battery_locations) == len(fleet.manifest.batteries)
    assert session.scalar(select(func.count(Station.id))) == len(fleet.stations)


def test_seed_demo_a_second_time_creates_nothing(session: Session) -> None:
    seed_demo(session, demo_network())
    assert not seed_demo(session, demo_network()).created_any
