"""A simulated fleet against the whole real backend: the API and the ingest as their own
processes, a Mosquitto of the test's own, and PostgreSQL.

The fleet registers itself and records its swaps through REST, and publishes its telemetry
through one shared MQTT connection; the test then reads what the ingest stored and holds it
against what the simulator published and against its ground truth (each battery's true
capacity at the moment of every measurement).

Committed data lives in a database of this test's own (named after the session's test
database, so parallel runs do not meet), dropped at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from app.core.config import normalize_database_url
from app.core.migrate import upgrade
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from app.models import KeyRole
from devices.client import BrokerSettings
from devices.contract import RecordKind
from devices.rest import SwapApiClient
from simulators.backend import RestFleetRegistrar, RestSwapRecorder, SharedMqttSink
from simulators.fleet import Fleet, FleetConfig
from simulators.sinks import InMemorySink, Record
from tests.conftest import ADMIN_URL, TEST_DB, recreate_database
from tests.fixtures.factories import make_key
from tests.fixtures.private_mosquitto import PrivateMosquitto, free_port

REPO = Path(__file__).resolve().parent.parent
# Naumann-style coulomb counting: the simulator's capacity readings carry 0.4 % (1 sigma) of
# Gaussian noise around the truth; five sigma leaves no room for a wrong battery or unit.
CAPACITY_NOISE_SIGMA = 0.004
pytestmark = pytest.mark.timeout(240)


@dataclass
class Backend:
    database_url: str
    api_url: str
    api_key: str
    mqtt_url: str
    topic_prefix: str
    logs: Path


class Tee:
    """Publishes through the real sink and keeps a copy of the capacity records."""

    def __init__(self, inner: SharedMqttSink) -> None:
        self.inner = inner
        self.capacity: list[tuple[str, Record]] = []

    def publish(self, kind: RecordKind, identity: str, records: Sequence[Record]) -> None:
        if kind is RecordKind.capacity:
            self.capacity.extend((identity, dict(r)) for r in records)
        self.inner.publish(kind, identity, records)


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    name = f"{TEST_DB}_sim_e2e"
    recreate_database(name)
    database_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    upgrade(database_url)
    engine = create_engine(normalize_database_url(database_url))
    with Session(engine) as session, session.begin():
        api_key = make_key(session, KeyRole.admin)
    engine.dispose()

    broker = PrivateMosquitto(tmp_path)
    # The ingest's SUBSCRIBE in the broker's log is the moment publishing may begin.
    subscriptions = tmp_path / "subscriptions.log"
    with broker.conf.open("a") as conf:
        conf.write(f"log_dest file {subscriptions}\nlog_type subscribe\n")
    broker.start()
    prefix = f"sime2e-{uuid.uuid4().hex[:8]}/v1"
    env = {
        **os.environ,
        "SWAPFLEET_ENVIRONMENT": "test",
        "SWAPFLEET_DATABASE_URL": database_url,
        "SWAPFLEET_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
        "SWAPFLEET_MQTT_TOPIC_PREFIX": prefix,
        "SWAPFLEET_INGEST_CLIENT_ID": f"ingest-{uuid.uuid4().hex[:8]}",
        "SWAPFLEET_INGEST_METRICS_PORT": "0",
        "SWAPFLEET_INGEST_BATCH_WINDOW_S": "0.05",
    }
    port = free_port()
    api = _start(
        [sys.executable, "-m", "app.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path / "api.log",
    )
    ingest = _start([sys.executable, "-m", "app.ingest", "run"], env, tmp_path / "ingest.log")
    api_url = f"http://127.0.0.1:{port}"
    try:

        def api_ready() -> bool:
            assert api.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
            try:
                return httpx.get(f"{api_url}/readyz", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        def ingest_subscribed() -> bool:
            assert ingest.poll() is None, (tmp_path / "ingest.log").read_text()[-3000:]
            return subscriptions.exists() and (
                f"{prefix}/vehicles/+/telemetry" in subscriptions.read_text(errors="replace")
            )

        _wait(api_ready, 60, "the API")
        _wait(ingest_subscribed, 60, "the ingest's subscription")
        yield Backend(
            database_url=database_url,
            api_url=api_url,
            api_key=api_key,
            mqtt_url=f"mqtt://127.0.0.1:{broker.port}",
            topic_prefix=prefix,
            logs=tmp_path,
        )
    finally:
        _stop(ingest)
        _stop(api)
        broker.stop()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _stored_capacity(database_url: str) -> list[tuple[str, datetime, float, float]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT battery_serial, ts, capacity_ah, capacity_kwh FROM capacity_records"
        ).fetchall()
    return [(r[0], r[1], float(r[2]), float(r[3])) for r in rows]


def _count(database_url: str, query: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def test_stored_capacity_records_match_the_simulators_ground_truth(backend: Backend) -> None:
    config = FleetConfig(
        stations=2,
        vehicles=10,
        days=10,
        seed=5,
        slots_per_station=8,
        # More of the charges count as capacity measurements: more readings per REST swap.
        capacity_max_start_soc_pct=30.0,
        start=datetime.fromisoformat("2026-10-20T00:00:00+00:00"),
        code_prefix=f"e2e{uuid.uuid4().hex[:6]}",
    )
    truth = InMemorySink()
    sink = SharedMqttSink(BrokerSettings.from_url(backend.mqtt_url), prefix=backend.topic_prefix)
    tee = Tee(sink)
    headers = {"Authorization": f"Bearer {backend.api_key}"}
    with (
        httpx.Client(base_url=backend.api_url, headers=headers, timeout=30.0) as http,
        SwapApiClient(backend.api_url, backend.api_key) as swaps,
    ):
        # Station-chooses, as the CLI does flat out: the backend's SoC readings come through
        # the ingest, which cannot keep up with simulated time running this fast.
        recorder = RestSwapRecorder(swaps, let_backend_choose=False)
        fleet = Fleet(config, tee, swap_recorder=recorder, truth=truth)
        report = RestFleetRegistrar(http).register(fleet.manifest)
        assert report.existing == 0
        sink.start()
        try:
            stats = fleet.run()
        finally:
            assert sink.close(timeout=60.0), sink.stats
    published = tee.capacity
    assert len(published) >= 20, "too short a run to compare capacity readings"
    assert stats.swaps > 50
    assert not stats.swaps_rejected, dict(stats.swaps_rejected)
    assert sink.stats.records_published[RecordKind.capacity.value] == len(published)

    def all_stored() -> bool:
        return len(_stored_capacity(backend.database_url)) >= len(published)

    _wait(all_stored, 60, f"{len(published)} capacity records in the database")
    # Anything doubled or late would show up now.
    time.sleep(1.0)
    stored = _stored_capacity(backend.database_url)
    dead = _count(
        backend.database_url, "SELECT count(*) FROM dead_letters WHERE topic LIKE '%/capacity'"
    )
    assert dead == 0
    assert len(stored) == len(published), "a capacity record was lost or stored twice"
    keys = Counter((serial, ts) for serial, ts, _, _ in stored)
    assert max(keys.values()) == 1
    published_keys = {
        (r["battery_serial"], datetime.fromisoformat(r["ts"].replace("Z", "+00:00")))
        for _, r in published
    }
    assert set(keys) == published_keys

    measured = {
        (row["battery_serial"], row["ts"]): row
        for row in truth.truth
        if row["event"] == "capacity_measured"
    }
    assert len(measured) == len(published)
    worst = 0.0
    ratios = []
    for serial, ts, capacity_ah, capacity_kwh in stored:
        row = measured[(serial, ts.strftime("%Y-%m-%dT%H:%M:%SZ"))]
        ratio = capacity_ah / float(row["capacity_ah"])
        ratios.append(ratio)
        worst = max(worst, abs(ratio - 1.0))
        assert capacity_kwh / float(row["capacity_kwh"]) == pytest.approx(ratio, abs=1e-3)
    assert worst < 5 * CAPACITY_NOISE_SIGMA, worst
    # Unbiased: the mean reading sits on the truth to well within its standard error.
    mean = sum(ratios) / len(ratios)
    assert abs(mean - 1.0) < 4 * CAPACITY_NOISE_SIGMA / len(ratios) ** 0.5

    # Every swap the simulator made is in the backend, once.
    assert _count(backend.database_url, "SELECT count(*) FROM swap_events") == stats.swaps
