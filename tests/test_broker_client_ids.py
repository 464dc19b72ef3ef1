"""Only the ingest can be the ingest (issue 11, finding 2): with the shipped Mosquitto
configuration, a device that connects with the ingest's client id gets its own username as
its id instead, so it can neither take over the ingest's session nor, with a clean start,
discard the messages queued in it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from app.core.config import Settings
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine

from app.ingest.client import libpq_url
from app.provisioning.service import Credential, CredentialKind, provision
from devices.contract import RecordKind, station_topic
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.ingest_harness import (
    Fleet,
    Publisher,
    charging,
    count,
    ingest_settings,
    running_ingest,
    seed_fleet,
    unique_prefix,
    wait_for,
)
from tests.fixtures.private_mosquitto import PrivateMosquitto

pytestmark = pytest.mark.timeout(120)

DB = libpq_url(TEST_DATABASE_URL)
QUEUED = 200


@dataclass
class Shipped:
    broker: PrivateMosquitto
    fleet: Fleet
    prefix: str
    ingest: Credential
    station: Credential

    def ingest_url(self) -> str:
        return f"mqtt://{self.ingest.username}:{self.ingest.password}@127.0.0.1:{self.broker.port}"


@pytest.fixture
def shipped(tmp_path: Path, engine: Engine) -> Iterator[Shipped]:
    fleet = seed_fleet(engine)
    prefix = unique_prefix()
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    ingest = provision(
        CredentialKind.ingest, "ingest", prefix=prefix, passwd_file=passwd, acl_file=acl
    )
    station = provision(
        CredentialKind.station,
        fleet.station_code,
        prefix=prefix,
        passwd_file=passwd,
        acl_file=acl,
    )
    broker = PrivateMosquitto.with_shipped_config(tmp_path, passwd, acl)
    broker.start()
    yield Shipped(broker, fleet, prefix, ingest, station)
    broker.kill()


def connect_as(shipped: Shipped, credential: Credential, client_id: str) -> ReasonCode:
    """Connects with clean_start (MQTT 5: the session under that id is discarded), then
    disconnects; returns the CONNACK's reason."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(credential.username, credential.password)
    outcome: list[ReasonCode] = []
    client.on_connect = lambda c, u, f, rc, p: outcome.append(rc)
    client.connect("127.0.0.1", shipped.broker.port, clean_start=True)
    deadline = time.monotonic() + 5
    while not outcome and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    client.loop(0.1)
    assert outcome, "no CONNACK"
    return outcome[0]


def stored(fleet: Fleet) -> int:
    return count(
        DB, "SELECT count(*) FROM charging_samples WHERE battery_serial = ANY(%s)", (fleet.serials,)
    )


def test_a_station_using_the_ingests_client_id_cannot_empty_its_queue(shipped: Shipped) -> None:
    fleet = shipped.fleet
    # As deployed: no SWAPFLEET_INGEST_CLIENT_ID, so the ingest's client id is its username.
    values = ingest_settings(TEST_DATABASE_URL, shipped.ingest_url(), shipped.prefix).model_dump()
    settings = Settings(**{k: v for k, v in values.items() if k != "ingest_client_id"})
    with running_ingest(settings) as ingest:
        client_id = ingest.client_id
        assert client_id == shipped.ingest.username
    # Stopped: its persistent session queues what the station sends now.
    station = Publisher(
        shipped.broker.port,
        client_id=shipped.station.username,
        username=shipped.station.username,
        password=shipped.station.password,
    )
    topic = station_topic(fleet.station_code, RecordKind.charging, shipped.prefix)
    station.publish_many(
        [
            (topic, orjson.dumps(charging(fleet.serials[i % 3], i // 3, slot=i % 3 + 1)))
            for i in range(QUEUED)
        ]
    )
    station.close()

    # The attack: the station's credential with the ingest's client id and a clean start.
    connect_as(shipped, shipped.station, client_id)

    with running_ingest(settings) as ingest:
        assert wait_for(lambda: stored(fleet) >= QUEUED, 30), f"{stored(fleet)} of {QUEUED}"
        # A takeover attempt while the ingest runs does not disconnect it either.
        connect_as(shipped, shipped.station, client_id)
        time.sleep(0.5)
        assert ingest.connected.is_set()
    assert stored(fleet) == QUEUED
    assert "already connected" not in shipped.broker.log.read_text()
