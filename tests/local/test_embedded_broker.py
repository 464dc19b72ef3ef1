"""Without Mosquitto, `swapfleet up` runs the embedded Python broker (amqtt, MQTT 3.1.1): the
ingest, the device client and the simulator's shared connection against a real one."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine

import app.local.local_broker as local_broker
from app.core import clock
from app.ingest.client import IngestService, libpq_url
from app.local.local_broker import BrokerUnavailable, free_port, prepare_local_broker
from devices.client import BrokerSettings, DeviceClient
from devices.contract import RecordKind, station_topic, vehicle_topic
from simulators.backend import SharedMqttSink
from simulators.fleet import Fleet, FleetConfig
from tests.conftest import ADMIN_URL, TEST_DATABASE_URL, TEST_DB, recreate_database
from tests.fixtures.ingest_harness import (
    Publisher,
    charging,
    count,
    dead_letter_reasons,
    ingest_settings,
    running_ingest,
    seed_fleet,
    unique_prefix,
    wait_for,
)
from tests.fixtures.paths import REPO_ROOT

pytest.importorskip("amqtt")
pytestmark = pytest.mark.timeout(180)

DB = libpq_url(TEST_DATABASE_URL)


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_broker(argv: list[str], env: Mapping[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(list(argv), env=dict(env), cwd=REPO_ROOT)
    deadline = time.monotonic() + 20
    while not port_open(port):
        assert process.poll() is None, "the embedded broker exited"
        assert time.monotonic() < deadline, "the embedded broker did not listen"
        time.sleep(0.1)
    return process


def stop_broker(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture
def broker_port() -> Iterator[int]:
    port = free_port()
    process = start_broker(
        [sys.executable, "-m", "app.local.embedded_broker", "--port", str(port)], os.environ, port
    )
    yield port
    stop_broker(process)


class Subscriber311:
    """Collects every message on a filter, over MQTT 3.1.1."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sub311-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def records(self, topic_part: str = "") -> list[dict[str, Any]]:
        with self._lock:
            payloads = [m.payload for m in self.messages if topic_part in m.topic]
        found: list[dict[str, Any]] = []
        for payload in payloads:
            document = orjson.loads(payload)
            found.extend(document["records"] if "records" in document else [document])
        return found

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the ingest over MQTT 3.1.1 ---------------------------------------------------------------


def test_ingest_over_mqtt_311_stores_each_record_once_and_dead_letters_garbage(
    engine: Engine, broker_port: int
) -> None:
    fleet = seed_fleet(engine)
    prefix = unique_prefix()
    settings = ingest_settings(
        TEST_DATABASE_URL, f"mqtt://127.0.0.1:{broker_port}", prefix, mqtt_protocol="3.1.1"
    )
    topic = station_topic(fleet.station_code, RecordKind.charging, prefix)
    serial = fleet.serials[0]
    batch = orjson.dumps({"records": [charging(serial, i * 10) for i in range(20)]})
    publisher = Publisher(broker_port, protocol=mqtt.MQTTv311)
    try:
        with running_ingest(settings) as ingest:
            assert ingest.client.protocol == mqtt.MQTTv311
            # The second copy is a device's republish: nothing new may be stored.
            publisher.publish_many([(topic, batch), (topic, b"\x00\xffnot json"), (topic, batch)])
            assert wait_for(lambda: ingest.messages_received == 3)
            q = "SELECT count(*) FROM charging_samples WHERE battery_serial = %s"
            assert wait_for(lambda: count(DB, q, (serial,)) == 20)
            assert wait_for(lambda: dead_letter_reasons(DB, prefix) == ["not_json"])
            time.sleep(0.5)
            assert count(DB, q, (serial,)) == 20
    finally:
        publisher.close()


def test_ingest_over_mqtt_311_keeps_its_session_and_drains_what_came_while_it_was_down(
    engine: Engine, broker_port: int
) -> None:
    fleet = seed_fleet(engine, batteries=2)
    prefix = unique_prefix()
    settings = ingest_settings(
        TEST_DATABASE_URL, f"mqtt://127.0.0.1:{broker_port}", prefix, mqtt_protocol="3.1.1"
    )
    topic = station_topic(fleet.station_code, RecordKind.charging, prefix)
    first, second = fleet.serials
    q = "SELECT count(*) FROM charging_samples WHERE battery_serial = %s"
    publisher = Publisher(broker_port, protocol=mqtt.MQTTv311)
    try:
        with running_ingest(settings):
            publisher.publish_many(
                [(topic, orjson.dumps(charging(first, i * 10))) for i in range(10)]
            )
            assert wait_for(lambda: count(DB, q, (first,)) == 10)
        # The ingest is gone; its persistent session (same client id) queues for it.
        offline = [(topic, orjson.dumps(charging(second, i * 10, slot=2))) for i in range(50)]
        publisher.publish_many(offline)
        time.sleep(0.5)
        assert count(DB, q, (second,)) == 0
        with running_ingest(settings) as ingest:
            assert wait_for(lambda: count(DB, q, (second,)) == 50)
            # From the broker's queue, not a republish: exactly what was missed.
            assert ingest.messages_received == 50
        assert count(DB, q, (first,)) == 10
        assert dead_letter_reasons(DB, prefix) == []
    finally:
        publisher.close()


def test_ingest_refuses_a_share_group_over_mqtt_311() -> None:
    settings = ingest_settings(
        TEST_DATABASE_URL,
        "mqtt://127.0.0.1:1883",
        unique_prefix(),
        mqtt_protocol="3.1.1",
        ingest_share_group="ingesters",
    )
    with pytest.raises(ValueError, match="shared subscriptions .* need MQTT 5"):
        IngestService(settings)


# --- the device side over MQTT 3.1.1 ----------------------------------------------------------


def test_device_client_and_shared_sink_publish_over_mqtt_311(
    broker_port: int, tmp_path: Path
) -> None:
    prefix = "embedded311/v1"
    subscriber = Subscriber311(broker_port, f"{prefix}/#")
    broker = BrokerSettings.from_url(f"mqtt://127.0.0.1:{broker_port}", protocol="3.1.1")
    try:
        client = DeviceClient.for_station(
            "ST-311", broker, outbox_path=tmp_path / "outbox.db", prefix=prefix
        )
        client.start()
        assert client.wait_connected(10)
        samples = [{"seq": n, "ts": clock.now().isoformat()} for n in range(30)]
        client.publish_records(RecordKind.charging, samples)
        assert client.flush(timeout=20)
        assert client.stats().acked_messages >= 1
        client.close()

        sink = SharedMqttSink(broker, prefix=prefix, batch_records=50).start()
        fleet = Fleet(FleetConfig(stations=1, vehicles=3, days=0.2, seed=5), sink)
        stats = fleet.run()
        assert sink.close(timeout=60.0)
        assert sink.stats.messages_rejected == 0
        assert sink.stats.messages_acked == sink.stats.messages_published > 0

        charging_topic = station_topic("ST-311", RecordKind.charging, prefix)
        assert wait_for(lambda: len(subscriber.records(charging_topic)) == 30)
        assert sorted(r["seq"] for r in subscriber.records(charging_topic)) == list(range(30))
        vehicle_records = stats.records[RecordKind.vehicle.value]
        assert vehicle_records > 0
        assert wait_for(
            lambda: len(subscriber.records("/vehicles/")) == vehicle_records, timeout=30
        )
    finally:
        subscriber.close()


# --- which broker `up` starts -----------------------------------------------------------------


def test_without_mosquitto_up_prepares_the_embedded_broker_and_it_serves_mqtt_311(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(local_broker, "MOSQUITTO_CANDIDATES", ("no-such-mosquitto-binary",))
    broker = prepare_local_broker(tmp_path, dict(os.environ))
    assert broker.protocol == "3.1.1"
    assert broker.spec.argv[1:3] == ["-m", "app.local.embedded_broker"]
    assert broker.description.startswith("embedded Python broker (amqtt, MQTT 3.1.1, demo only)")
    process = start_broker(list(broker.spec.argv), broker.spec.env, broker.port)
    try:
        subscriber = Subscriber311(broker.port, "roundtrip/#")
        publisher = Publisher(broker.port, protocol=mqtt.MQTTv311)
        try:
            publisher.publish_many([("roundtrip/a", b'{"n":1}'), ("roundtrip/b", b'{"n":2}')])
            assert wait_for(lambda: sorted(r["n"] for r in subscriber.records()) == [1, 2])
        finally:
            publisher.close()
            subscriber.close()
    finally:
        stop_broker(process)


def test_with_mosquitto_up_prepares_it_and_keeps_mqtt_5(tmp_path: Path) -> None:
    if local_broker.find_mosquitto() is None:
        pytest.skip("Mosquitto is not installed")
    broker = prepare_local_broker(tmp_path, {})
    assert broker.protocol == "5"
    assert broker.description.startswith("private Mosquitto on ")
    assert (tmp_path / "mosquitto" / "mosquitto.conf").exists()


def test_without_any_broker_up_names_both_ways_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(local_broker, "find_mosquitto", lambda: None)
    monkeypatch.setattr(local_broker, "embedded_broker_installed", lambda: False)
    with pytest.raises(BrokerUnavailable, match="Mosquitto.*swapfleet\\[embedded-broker\\]"):
        prepare_local_broker(tmp_path, {})


# `swapfleet up` itself, with Mosquitto out of sight: only the parent chooses the broker.
UP_WITHOUT_MOSQUITTO = (
    "import sys, app.local.local_broker as lb; lb.find_mosquitto = lambda: None; "
    "from app.cli import main; sys.argv[0] = 'swapfleet'; main()"
)
KEY_LINE = re.compile(r"^sfk_[A-Za-z0-9_-]{40,}$")


# A whole `swapfleet up` with the embedded broker: 38 s beside other tests.
@pytest.mark.slow
def test_up_without_mosquitto_carries_an_mqtt_311_record_to_the_rest_api() -> None:
    database = f"{TEST_DB}_up311"
    recreate_database(database)
    database_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    data_dir = Path(tempfile.mkdtemp(prefix="swapfleet-up311-"))
    log = data_dir / "up.log"
    api_port = free_port()
    # Configured as a user would, but on the test's clock: the record below is stamped by it.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SWAPFLEET_") or k == "SWAPFLEET_CLOCK_OFFSET_S"
    }
    env |= {
        "SWAPFLEET_DATABASE_URL": database_url,
        "SWAPFLEET_DATA_DIR": str(data_dir),
        "SWAPFLEET_INGEST_METRICS_PORT": "0",
        "SWAPFLEET_INGEST_BATCH_WINDOW_S": "0.05",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", UP_WITHOUT_MOSQUITTO, "up", "--port", str(api_port),
             "--no-simulate"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 90
        while not _ready(base):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        # The ingest's session exists only once it has subscribed: what is published before
        # that, to a broker that has never seen it, has no one to be queued for.
        while "event=subscribed" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        output = log.read_text()
        match = re.search(
            r"MQTT broker: embedded Python broker \(amqtt, MQTT 3\.1\.1, demo only\) on "
            r"mqtt://127\.0\.0\.1:(\d+)",
            output,
        )
        assert match, output
        key = next(line for line in output.splitlines() if KEY_LINE.match(line.strip()))

        vin, serial = "SFV00000000000001", "BB-HT141-0001"  # a demo vehicle and its battery
        record = {
            "battery_serial": serial, "ts": (clock.now() - timedelta(seconds=5)).isoformat(),
            "soc_pct": 61.0, "odometer_km": 1234.5, "pack_voltage_v": 540.0,
            "pack_current_a": -80.0, "temp_c_max": 33.0, "lat": 39.9, "lon": 116.4,
        }  # fmt: skip
        publisher = Publisher(int(match.group(1)), protocol=mqtt.MQTTv311)
        try:
            publisher.publish_many([(vehicle_topic(vin), orjson.dumps(record))])
        finally:
            publisher.close()

        def arrived() -> bool:
            response = httpx.get(
                f"{base}/v1/vehicles/{vin}/telemetry",
                headers={"Authorization": f"Bearer {key}"},
                timeout=5,
            )
            assert response.status_code == 200, response.text
            return any(i["odometer_km"] == 1234.5 for i in response.json()["items"])

        assert wait_for(arrived, timeout=30, interval=0.5), log.read_text()[-3000:]
    finally:
        # Ctrl-C in a terminal: SIGINT to every process of the group.
        os.killpg(process.pid, signal.SIGINT)
        try:
            assert process.wait(timeout=60) == 0, log.read_text()
            assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            shutil.rmtree(data_dir, ignore_errors=True)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
