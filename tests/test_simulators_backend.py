"""The fleet against the real API and database: registration through REST, swaps through REST.

The API runs in-process (TestClient) on the test's rolled-back transaction; the fleet talks to
it through the same clients the CLI uses (RestFleetRegistrar, devices.rest.SwapApiClient).
"""

import http.server
import threading
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import KeyRole
from devices.rest import RetryPolicy, SwapApiClient
from simulators.backend import RestFleetRegistrar, RestSwapRecorder, battery_body
from simulators.fleet import Fleet, FleetConfig
from simulators.sinks import InMemorySink, SwapRequest, SwapResult
from tests.fixtures.factories import auth, make_key, unique


class Recording:
    """Keeps what the backend answered, next to the request."""

    def __init__(self, inner: RestSwapRecorder) -> None:
        self.inner = inner
        self.results: list[tuple[SwapRequest, SwapResult]] = []

    def record_swap(self, request: SwapRequest) -> SwapResult:
        result = self.inner.record_swap(request)
        self.results.append((request, result))
        return result


def admin_client(client: TestClient, session: Session) -> str:
    key = make_key(session, KeyRole.admin)
    client.headers.update(auth(key))
    return key


def run_against_api(
    client: TestClient, key: str, *, backend_chooses: bool, days: float
) -> tuple[Fleet, Recording]:
    config = FleetConfig(
        stations=2, vehicles=8, days=days, seed=21, slots_per_station=6,
        code_prefix=unique("sim").lower(),
    )  # fmt: skip
    swap_client = SwapApiClient(
        "http://testserver", key, http=client, retry=RetryPolicy(max_attempts=1)
    )
    recorder = Recording(RestSwapRecorder(swap_client, let_backend_choose=backend_chooses))
    fleet = Fleet(config, InMemorySink(keep_records=False), swap_recorder=recorder)
    RestFleetRegistrar(client).register(fleet.manifest)
    fleet.run()
    return fleet, recorder


def assert_backend_matches_sim(client: TestClient, fleet: Fleet) -> None:
    for vehicle in fleet.vehicles:
        body = client.get(f"/v1/vehicles/{vehicle.vin}").json()
        assert body["installed_battery_serial"] == vehicle.battery.serial
    for station in fleet.stations:
        slots = client.get(f"/v1/stations/{station.code}/slots").json()
        items = slots["items"] if isinstance(slots, dict) else slots
        backend = {s["number"]: s["battery_serial"] for s in items}
        sim = {s.number: (s.battery.serial if s.battery else None) for s in station.slots}
        assert backend == sim


def test_registration_creates_the_fleet_where_the_sim_placed_it(
    client: TestClient, session: Session
) -> None:
    admin_client(client, session)
    config = FleetConfig(stations=2, vehicles=5, days=0.1, seed=4, slots_per_station=5,
                         code_prefix=unique("sim").lower())  # fmt: skip
    fleet = Fleet(config, InMemorySink())
    RestFleetRegistrar(client).register(fleet.manifest)

    assert_backend_matches_sim(client, fleet)
    entry = fleet.manifest.batteries[0]
    stored = client.get(f"/v1/batteries/{entry.serial}").json()
    assert stored["pack_type_code"] == entry.pack_type_code
    assert stored["soh_pct"] == battery_body(entry)["soh_pct"]


def test_swaps_named_by_the_station_land_in_the_backend(
    client: TestClient, session: Session
) -> None:
    key = admin_client(client, session)
    fleet, recorder = run_against_api(client, key, backend_chooses=False, days=1.0)

    assert fleet.stats.swaps > 5
    assert all(result.accepted for _, result in recorder.results), Counter(
        r.reason_code for _, r in recorder.results
    )
    assert fleet.stats.swap_mismatches == 0
    swaps = client.get("/v1/swaps", params={"vin": fleet.vehicles[0].vin})
    assert swaps.status_code == 200
    assert_backend_matches_sim(client, fleet)


def test_sim_follows_the_battery_the_backend_allocates(
    client: TestClient, session: Session
) -> None:
    key = admin_client(client, session)
    fleet, recorder = run_against_api(client, key, backend_chooses=True, days=0.5)

    accepted = [(req, res) for req, res in recorder.results if res.accepted]
    assert accepted
    # Whatever the backend picked is what the vehicle drove away with.
    assert fleet.stats.swap_mismatches == 0
    assert_backend_matches_sim(client, fleet)


def test_a_restarted_simulator_reuses_its_fleet_and_continues_from_the_backends_custody(
    client: TestClient, session: Session
) -> None:
    key = admin_client(client, session)
    first, recorder = run_against_api(client, key, backend_chooses=False, days=1.0)
    assert first.stats.swaps > 5

    # Same prefix and seed, as a second `swapfleet up` on the same database would run; like
    # `up`, it starts later (paced runs start now).
    restart = replace(first.config, start=first.config.start + timedelta(days=1))
    again = Fleet(restart, InMemorySink(keep_records=False))
    report = RestFleetRegistrar(client).register(again.manifest)

    assert report.created == 0
    assert len(report.battery_locations) == len(again.manifest.batteries)
    assert again.adopt_custody(report.battery_locations, report.battery_soc) > 0
    assert_backend_matches_sim(client, again)

    swaps = SwapApiClient("http://testserver", key, http=client, retry=RetryPolicy(max_attempts=1))
    second = Recording(RestSwapRecorder(swaps, let_backend_choose=False))
    again.recorder = second
    again.run()
    assert again.stats.swaps > 5
    assert all(result.accepted for _, result in second.results), Counter(
        r.reason_code for _, r in second.results
    )
    assert_backend_matches_sim(client, again)


def test_registration_retries_a_503_which_stored_nothing() -> None:
    """A real HTTP server that is briefly unavailable: the registrar sends the same request
    again after Retry-After instead of failing the whole run."""
    answers = iter([503, 503, 201])
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.path)
            status = next(answers)
            self.send_response(status)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}") as client:
            registrar = RestFleetRegistrar(client)
            registrar._post("/v1/organizations", {"code": "X"})
    finally:
        server.shutdown()
    assert seen == ["/v1/organizations"] * 3
    assert registrar.report.created == 1
