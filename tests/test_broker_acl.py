"""Per-device credentials and the ACL, enforced by a real Mosquitto using the generated files."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from app.provisioning.service import Credential, CredentialKind, provision
from devices.client import BrokerSettings, DeviceClient, PublishOptions
from devices.contract import RecordKind
from tests.fixtures.mqtt_collector import Collector
from tests.fixtures.private_mosquitto import PrivateMosquitto

PREFIX = "swapfleet/v1"


@dataclass
class SecuredBroker:
    broker: PrivateMosquitto
    credentials: dict[str, Credential]

    def settings(self, name: str) -> BrokerSettings:
        credential = self.credentials[name]
        return BrokerSettings(
            port=self.broker.port, username=credential.username, password=credential.password
        )

    def ingest_collector(self, topic_filter: str) -> Collector:
        ingest = self.credentials["ingest"]
        return Collector(
            self.broker.port, topic_filter, username=ingest.username, password=ingest.password
        ).start()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredBroker]:
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    credentials = {
        name: provision(kind, identity, prefix=PREFIX, passwd_file=passwd, acl_file=acl)
        for name, kind, identity in [
            ("ingest", CredentialKind.ingest, "ingest"),
            ("A", CredentialKind.station, "ST-A"),
            ("B", CredentialKind.station, "ST-B"),
            ("V", CredentialKind.vehicle, "WVWZZZ1JZXW000001"),
        ]
    }
    broker = PrivateMosquitto(tmp_path, passwd_file=passwd, acl_file=acl)
    broker.start()
    yield SecuredBroker(broker, credentials)
    broker.kill()


def records(count: int) -> list[dict[str, object]]:
    return [{"seq": n, "ts": "2025-01-01T00:00:00+00:00"} for n in range(count)]


def publish_and_close(client: DeviceClient, kind: RecordKind, count: int) -> DeviceClient:
    client.start()
    assert client.wait_connected(10), "the credential was refused"
    client.publish_records(kind, records(count))
    assert client.flush(10)
    return client


def test_station_cannot_publish_under_another_stations_topic(secured: SecuredBroker) -> None:
    watcher = secured.ingest_collector(f"{PREFIX}/#")
    # Station A's credential, pretending to be station B.
    impostor = DeviceClient.for_station(
        "ST-B", secured.settings("A"), options=PublishOptions(batch_interval_s=0.05)
    )
    publish_and_close(impostor, RecordKind.charging, 5)
    stats = impostor.stats()
    # The broker answers "not authorised" in the PUBACK; the client parks the message
    # instead of resending it forever.
    assert stats.rejected_messages == 1
    assert (stats.outbox_messages, stats.pending_records) == (0, 0)
    impostor.close()

    honest = DeviceClient.for_station(
        "ST-A", secured.settings("A"), options=PublishOptions(batch_interval_s=0.05)
    )
    publish_and_close(honest, RecordKind.charging, 3)
    honest.close()

    assert watcher.wait_until(lambda c: len(c.records(f"{PREFIX}/stations/ST-A/charging")) == 3, 5)
    time.sleep(0.3)
    topics = {m.topic for m in watcher.snapshot()}
    assert not any(topic.startswith(f"{PREFIX}/stations/ST-B/") for topic in topics)
    watcher.stop()


def test_vehicle_publishes_only_its_own_telemetry(secured: SecuredBroker) -> None:
    watcher = secured.ingest_collector(f"{PREFIX}/#")
    other = DeviceClient.for_vehicle(
        "WVWZZZ1JZXW000002", secured.settings("V"), options=PublishOptions(batch_interval_s=0.05)
    )
    publish_and_close(other, RecordKind.vehicle, 2)
    assert other.stats().rejected_messages == 1
    other.close()

    own = DeviceClient.for_vehicle(
        "WVWZZZ1JZXW000001", secured.settings("V"), options=PublishOptions(batch_interval_s=0.05)
    )
    publish_and_close(own, RecordKind.vehicle, 2)
    own.close()
    assert watcher.wait_until(lambda c: len(c.records()) == 2, 5)
    time.sleep(0.3)
    assert {m.topic for m in watcher.snapshot()} == {
        f"{PREFIX}/vehicles/WVWZZZ1JZXW000001/telemetry"
    }
    watcher.stop()


def test_vehicle_cannot_publish_as_a_station(secured: SecuredBroker) -> None:
    watcher = secured.ingest_collector(f"{PREFIX}/#")
    station = DeviceClient.for_station(
        "ST-A", secured.settings("V"), options=PublishOptions(batch_interval_s=0.05)
    )
    publish_and_close(station, RecordKind.health, 1)
    assert station.stats().rejected_messages == 1
    station.close()
    time.sleep(0.3)
    # Its birth and offline statuses were refused as well.
    assert watcher.snapshot() == []
    watcher.stop()


def test_ingest_credential_reads_through_a_shared_subscription(secured: SecuredBroker) -> None:
    shared = secured.ingest_collector(f"$share/ingest/{PREFIX}/stations/+/+")
    assert not any(code.is_failure for code in shared.granted)
    station = DeviceClient.for_station(
        "ST-B", secured.settings("B"), options=PublishOptions(batch_interval_s=0.05)
    )
    publish_and_close(station, RecordKind.capacity, 4)
    station.close()
    assert shared.wait_until(lambda c: len(c.records(f"{PREFIX}/stations/ST-B/capacity")) == 4, 5)
    shared.stop()


def test_a_station_cannot_read_other_devices_telemetry(secured: SecuredBroker) -> None:
    credential = secured.credentials["A"]
    snoop = Collector(
        secured.broker.port,
        f"{PREFIX}/#",
        username=credential.username,
        password=credential.password,
    ).start()
    station = DeviceClient.for_station(
        "ST-B", secured.settings("B"), options=PublishOptions(batch_interval_s=0.05)
    )
    publish_and_close(station, RecordKind.charging, 3)
    station.close()
    time.sleep(0.5)
    assert snoop.snapshot() == []
    snoop.stop()


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, None), ("station-ST-A", "wrong password"), ("nobody", "x")],
)
def test_broker_refuses_anonymous_and_wrong_credentials(
    secured: SecuredBroker, username: str | None, password: str | None
) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if username is not None:
        client.username_pw_set(username, password)
    outcome: list[ReasonCode] = []
    client.on_connect = lambda c, u, f, rc, p: outcome.append(rc)
    client.connect("127.0.0.1", secured.broker.port)
    deadline = time.monotonic() + 5
    while not outcome and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    assert outcome, "no CONNACK"
    assert outcome[0].is_failure
