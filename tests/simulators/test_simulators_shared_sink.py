"""The fleet's shared MQTT connection (SharedMqttSink) against real Mosquitto brokers."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer.main

from devices.client import BrokerSettings
from devices.contract import RecordKind, parse_topic
from simulators.backend import SharedMqttSink
from simulators.cli import simulate_cli, up_simulator_command
from simulators.fleet import Fleet, FleetConfig
from simulators.scenarios import DEMO_PREFIX, DEMO_SCENARIO, DEMO_SEED
from tests.fixtures.mqtt_collector import Collector
from tests.fixtures.private_mosquitto import PrivateMosquitto, free_port

pytestmark = pytest.mark.timeout(120)


def _records_by_kind(collector: Collector, prefix: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for message in collector.snapshot():
        identity = parse_topic(message.topic, prefix)
        assert identity is not None, message.topic
        counts[identity.kind.value] += len(message.records())
    return counts


def test_shared_connection_delivers_every_record_on_its_devices_topic(tmp_path: Path) -> None:
    # A broker granting only 5 messages in flight: exceeding it would drop the connection.
    broker = PrivateMosquitto(tmp_path, max_inflight_messages=5)
    broker.start()
    prefix = "sharedsink/v1"
    collector = Collector(broker.port, f"{prefix}/#").start()
    try:
        sink = SharedMqttSink(
            BrokerSettings(port=broker.port),
            prefix=prefix,
            batch_records=50,
            status_min_interval_s=0.0,
        ).start()
        fleet = Fleet(FleetConfig(stations=2, vehicles=12, days=0.5, seed=3), sink)
        stats = fleet.run()
        assert sink.close(timeout=60.0)

        assert sink.stats.messages_acked == sink.stats.messages_published
        assert sink.stats.messages_rejected == 0
        expected = {k: v for k, v in stats.records.items() if k != RecordKind.status.value}
        # Every status goes out (no minimum interval), plus each station's offline status.
        expected[RecordKind.status.value] = stats.records[RecordKind.status.value] + 2
        assert collector.wait_until(
            lambda _: _records_by_kind(collector, prefix) == expected, timeout=30.0
        ), (_records_by_kind(collector, prefix), expected)
        vins = {v.vin for v in fleet.vehicles}
        codes = {s.code for s in fleet.stations}
        for message in collector.snapshot():
            identity = parse_topic(message.topic, prefix)
            assert identity is not None
            assert (identity.vin in vins) if identity.vin else (identity.station_code in codes)
            if identity.kind is not RecordKind.status:
                assert len(message.records()) <= 50
    finally:
        collector.stop()
        broker.stop()


def test_stale_station_statuses_are_superseded_and_the_latest_is_sent(tmp_path: Path) -> None:
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    prefix = "statuses/v1"
    collector = Collector(broker.port, f"{prefix}/stations/+/status").start()
    try:
        sink = SharedMqttSink(
            BrokerSettings(port=broker.port), prefix=prefix, status_min_interval_s=3600.0
        ).start()
        for n in range(10):
            sink.publish(RecordKind.status, "ST-1", [{"online": True, "n": n}])
        sink.flush_buffers()
        assert sink.wait_acked(10.0)
        assert sink.stats.records_published[RecordKind.status.value] == 2
        assert sink.stats.statuses_superseded == 8
        assert collector.wait_until(lambda c: len(c.snapshot()) == 2, timeout=10.0)
        assert [m.records()[0]["n"] for m in collector.snapshot()] == [0, 9]
        # Retained: a subscriber arriving later is handed the latest status at once.
        late = Collector(broker.port, f"{prefix}/stations/+/status").start()
        try:
            assert late.wait_until(lambda c: len(c.snapshot()) == 1, timeout=10.0)
            retained = late.snapshot()[0]
            assert retained.retain
            assert retained.records()[0]["n"] == 9
        finally:
            late.stop()
        assert sink.close(timeout=10.0)
    finally:
        collector.stop()
        broker.stop()


def test_close_returns_within_its_timeout_when_the_broker_is_gone(tmp_path: Path) -> None:
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    sink = SharedMqttSink(
        BrokerSettings(port=broker.port), prefix="gone/v1", max_unacked_messages=5
    ).start()
    broker.kill()
    for n in range(20):
        sink.publish(RecordKind.capacity, "ST-1", [{"n": n}])
    started = time.monotonic()
    # Nothing can be acknowledged: close gives up at its deadline instead of hanging.
    assert sink.close(timeout=3.0) is False
    assert time.monotonic() - started < 10.0
    assert sink.stats.messages_acked == 0


def test_start_fails_clearly_when_no_broker_listens() -> None:
    sink = SharedMqttSink(BrokerSettings(port=free_port()), prefix="none/v1")
    with pytest.raises(ConnectionError, match="not connected"):
        sink.start(timeout=1.0)


def test_up_backfills_history_on_a_new_database_then_runs_paced_behind_the_clock() -> None:
    now = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    argv, _ = up_simulator_command(
        "http://127.0.0.1:8000", "sk", "mqtt://127.0.0.1:1883", backfill=True, now=now
    )
    command = typer.main.get_command(simulate_cli)
    params = command.make_context("simulate", list(argv[4:])).params
    start = params["start"].replace(tzinfo=UTC)
    flat_out_until = params["flat_out_until"].replace(tzinfo=UTC)
    assert start < flat_out_until < now
    assert flat_out_until - start >= timedelta(days=2)


def test_up_runs_a_small_paced_fleet_that_reuses_its_registration() -> None:
    argv, env = up_simulator_command(
        "http://127.0.0.1:8000", "sk_admin", "mqtt://127.0.0.1:1883", base_env={"PATH": "/bin"}
    )
    assert argv[1:4] == ["-m", "app.cli", "simulate"]
    command = typer.main.get_command(simulate_cli)
    params = command.make_context("simulate", list(argv[4:])).params
    assert params["stations"] <= 5
    assert params["vehicles"] <= 50
    assert float(params["speed"]) > 1  # faster than real time: a newcomer sees swaps at once
    assert params["flat_out_until"] is None
    # The demo network's codes and seed: `up` finds what seed-demo registered.
    assert (params["scenario"], params["prefix"], params["seed"]) == (
        DEMO_SCENARIO, DEMO_PREFIX, DEMO_SEED,
    )  # fmt: skip
    assert params["wait"] > 0
    assert env == {
        "PATH": "/bin",
        "SWAPFLEET_API_URL": "http://127.0.0.1:8000",
        "SWAPFLEET_API_KEY": "sk_admin",
        "SWAPFLEET_MQTT_URL": "mqtt://127.0.0.1:1883",
    }
