"""The simulated fleet with its stations over OCPP 2.1 (simulators/ocpp_station.py) against a
real `swapfleet api` process: for one simulated day, every swap the stations made is in the
backend, as they made it, and every charging sample they sent is stored once."""

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.core import clock
from app.models import KeyRole
from simulators.backend import RestFleetRegistrar
from simulators.fleet import Fleet, FleetConfig
from simulators.ocpp_station import OcppFleetStations, provision_ocpp
from simulators.sinks import InMemorySink, SwapRecorder, SwapRequest, SwapResult
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.api_server import ApiServer, running_api
from tests.fixtures.committed import truncate_all
from tests.fixtures.factories import make_key
from tests.fixtures.simulate_cli import completed_swaps, run_simulate, summary_count

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def api(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    log = tmp_path_factory.mktemp("sim_ocpp") / "api.log"
    with running_api(TEST_DATABASE_URL, log) as server:
        yield server
    # This module's worlds are committed: gone before the worker's next module.
    truncate_all(engine)


class Kept:
    """The swaps the stations reported, with what became of each."""

    def __init__(self, inner: SwapRecorder) -> None:
        self.inner = inner
        self.swaps: list[tuple[SwapRequest, SwapResult]] = []

    def record_swap(self, request: SwapRequest) -> SwapResult:
        result = self.inner.record_swap(request)
        self.swaps.append((request, result))
        return result


def test_a_simulated_day_over_ocpp_stores_every_swap_and_sample_once(
    engine: Engine, api: ApiServer
) -> None:
    prefix = f"oc{uuid.uuid4().hex[:6]}"
    # The day before yesterday: OCPP swap events carry their simulated time (customData),
    # which the gateway takes only when it is not in the future.
    start = clock.now().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(2)
    config = FleetConfig(
        stations=2, vehicles=12, days=1, seed=7, slots_per_station=6, start=start,
        code_prefix=prefix,
    )  # fmt: skip
    with Session(engine) as session, session.begin():
        admin = make_key(session, KeyRole.admin)
    others = InMemorySink(keep_records=False)
    fleet = Fleet(config, others)
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=api.base_url, headers=headers, timeout=30.0) as http:
        RestFleetRegistrar(http).register(fleet.manifest)
        passwords = provision_ocpp(http, fleet.manifest)
    with OcppFleetStations(api.base_url, passwords, others) as stations:
        kept = Kept(stations)
        fleet.sink = stations
        fleet.recorder = kept
        stats = fleet.run()
    assert dict(stations.failed) == {}
    assert stats.swaps >= 10, "too short a run"
    assert stats.swaps == len(kept.swaps)
    assert not stats.swaps_rejected

    with engine.connect() as conn:
        stored = sorted(
            (row.code, row.vin, row.removed_battery_serial, row.installed_battery_serial,
             row.started_at, row.finished_at, row.outcome)
            for row in conn.execute(
                text(
                    "SELECT e.vin, e.removed_battery_serial, e.installed_battery_serial,"
                    " e.started_at, e.finished_at, e.outcome, s.code FROM swap_events e"
                    " JOIN stations s ON s.id = e.station_id WHERE s.code LIKE :p"
                ),
                {"p": f"{prefix}%"},
            )
        )  # fmt: skip
        samples = conn.execute(
            text(
                "SELECT count(*) FROM charging_samples c JOIN stations s ON s.id = c.station_id"
                " WHERE s.code LIKE :p"
            ),
            {"p": f"{prefix}%"},
        ).scalar_one()
        letters = conn.execute(
            text("SELECT reason, detail FROM dead_letters WHERE station_code LIKE :p LIMIT 5"),
            {"p": f"{prefix}%"},
        ).all()
        exceptions = conn.execute(
            text(
                "SELECT x.reason_code FROM custody_exceptions x JOIN stations s"
                " ON s.id = x.station_id WHERE s.code LIKE :p"
            ),
            {"p": f"{prefix}%"},
        ).all()
    made = sorted(
        (r.station_code, r.vin, r.removed_battery_serial, r.proposed_battery_serial,
         datetime.fromisoformat(r.started_at), datetime.fromisoformat(r.finished_at), "completed")
        for r, _ in kept.swaps
    )  # fmt: skip
    assert stored == made
    assert exceptions == []
    assert letters == []
    assert samples == stats.records["charging"]


def test_swapfleet_simulate_station_protocol_ocpp_runs_its_stations_over_ocpp(
    engine: Engine, api: ApiServer
) -> None:
    prefix = f"oc{uuid.uuid4().hex[:6]}"
    with Session(engine) as session, session.begin():
        admin = make_key(session, KeyRole.admin)
    output = run_simulate(
        "--station-protocol", "ocpp", "--stations", "1", "--vehicles", "6", "--slots", "6",
        "--days", "0.5", "--seed", "3", "--prefix", prefix, "--api-url", api.base_url,
        "--api-key", admin, "--no-progress",
    )  # fmt: skip
    assert "CALLERRORs by action: none" in output, output[-2000:]
    with engine.connect() as conn:
        samples = conn.execute(
            text(
                "SELECT count(*) FROM charging_samples c JOIN stations s ON s.id = c.station_id"
                " WHERE s.code LIKE :p"
            ),
            {"p": f"{prefix}%"},
        ).scalar_one()
        letters = conn.execute(
            text("SELECT reason, detail FROM dead_letters WHERE station_code LIKE :p LIMIT 3"),
            {"p": f"{prefix}%"},
        ).all()
    assert completed_swaps(engine, prefix) == summary_count(output, "swaps completed") > 0
    # The gateway answers a MeterValues it dead-letters like one it stores (OCPP: telemetry
    # is not refused), so only the backend's tables tell: the CLI's records must be on the
    # backend's clock, inside its retention and not in its future (it failed so with the
    # clock at 2028-02-29, the simulator then on the wall clock: ts_too_old).
    assert letters == []
    assert samples == summary_count(output, "records: charging") > 0
