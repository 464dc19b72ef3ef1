"""No message ends the ingest (issue 11, finding 1): what used to kill its writer process is
dead-lettered, the messages around it are stored once, and a message that does kill the
writer is recognised and dead-lettered instead of killing it again and again."""

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from app.ingest.client import IngestService, libpq_url
from devices.contract import RecordKind, station_topic
from tests.conftest import TEST_DATABASE_URL
from tests.ingest_harness import (
    Fleet,
    Publisher,
    charging,
    count,
    dead_letter_reasons,
    ingest_settings,
    running_ingest,
    seed_fleet,
    ts,
    unique_prefix,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)

DB = libpq_url(TEST_DATABASE_URL)
BROKER = "mqtt://127.0.0.1:1883"
ABORT_MARKER = "abort-the-writer-here"


@pytest.fixture
def fleet(engine: Engine) -> Fleet:
    return seed_fleet(engine, batteries=4)


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    pub = Publisher()
    yield pub
    pub.close()


def health(serial: str, offset_s: float, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "battery_serial": serial, "ts": ts(offset_s), "soh_pct": 96.5,
        "internal_resistance_mohm": 1.2, "cell_voltage_min_v": 3.28,
        "cell_voltage_max_v": 3.31, "temp_c_max": 30.0, "cycle_count": 412,
    }  # fmt: skip
    record.update(overrides)
    return record


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def with_raw_field(record: dict[str, Any], name: str, raw_json: bytes) -> bytes:
    """The record with one field written as raw JSON (orjson cannot encode integers beyond
    64 bits nor nest beyond 255 levels; devices can)."""
    fields = {k: v for k, v in record.items() if k != name}
    return orjson.dumps(fields)[:-1] + b',"' + name.encode() + b'":' + raw_json + b"}"


def stored_charging(serials: list[str]) -> int:
    return count(
        DB, "SELECT count(*) FROM charging_samples WHERE battery_serial = ANY(%s)", (serials,)
    )


def sessions_samples(serials: list[str]) -> int:
    return count(
        DB,
        "SELECT coalesce(sum(sample_count), 0) FROM charging_sessions"
        " WHERE battery_serial = ANY(%s)",
        (serials,),
    )


def assert_alive(ingest: IngestService) -> None:
    assert not ingest._writer_gone.is_set(), "the ingest's writer is gone"
    assert not ingest._stop.is_set(), "the ingest stopped"


def test_messages_that_ended_the_writer_are_dead_lettered_and_their_neighbours_stored(
    engine: Engine, fleet: Fleet, prefix: str, publisher: Publisher
) -> None:
    """The four payloads of the finding, each between two valid records."""
    valid = fleet.serials[:2]
    hostile = fleet.serials[2]
    charging_topic = station_topic(fleet.station_code, RecordKind.charging, prefix)
    health_topic = station_topic(fleet.station_code, RecordKind.health, prefix)
    latest, earliest = "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"
    payloads = [
        (charging_topic, orjson.dumps(charging(hostile, 1, slot=3, ts=latest))),
        (charging_topic, orjson.dumps(charging(hostile, 2, slot=3, ts=earliest))),
        (health_topic, with_raw_field(health(hostile, 3), "cycle_count", str(10**30).encode())),
        (charging_topic, with_raw_field(charging(hostile, 4, slot=3), "deep", nested(1000))),
    ]  # fmt: skip
    messages = []
    for i, message in enumerate(payloads):
        messages.append((charging_topic, orjson.dumps(charging(valid[0], i, slot=1))))
        messages.append(message)
        messages.append((charging_topic, orjson.dumps(charging(valid[1], i, slot=2))))
    settings = ingest_settings(TEST_DATABASE_URL, BROKER, prefix)
    with running_ingest(settings) as ingest:
        publisher.publish_many(messages)
        assert wait_for(lambda: len(dead_letter_reasons(DB, prefix)) >= len(payloads), 30), (
            dead_letter_reasons(DB, prefix)
        )
        assert wait_for(lambda: stored_charging(valid) == 2 * len(payloads))
        assert_alive(ingest)
        # ...and it goes on storing what comes next.
        publisher.publish(charging_topic, orjson.dumps(charging(valid[0], 100, slot=1)))
        assert wait_for(lambda: stored_charging(valid) == 2 * len(payloads) + 1)
        assert_alive(ingest)
    assert sessions_samples(valid) == 2 * len(payloads) + 1
    assert stored_charging([hostile]) == 0
    assert (
        count(DB, "SELECT count(*) FROM health_records WHERE battery_serial = %s", (hostile,)) == 0
    )
    reasons = dead_letter_reasons(DB, prefix)
    assert len(reasons) == len(payloads)
    # The timestamps and the cycle count are beyond the contract's bounds; the nesting is
    # within JSON's but beyond what can be stored.
    assert reasons.count("impossible_value") == 3, reasons


def test_a_message_that_kills_the_writer_process_is_dead_lettered_and_the_rest_stored_once(
    engine: Engine, fleet: Fleet, prefix: str, publisher: Publisher
) -> None:
    """The writer process dies (SIGKILL, see Settings.ingest_test_abort_marker) whenever it
    is handed one particular message: the ingest starts a new writer, finds the message by
    bisecting the jobs that were in flight, dead-letters it as writer_crash, and stores every
    other message exactly once."""
    valid = fleet.serials[:2]
    topic = station_topic(fleet.station_code, RecordKind.charging, prefix)
    messages = [
        (topic, orjson.dumps(charging(valid[i % 2], i // 2, slot=i % 2 + 1))) for i in range(400)
    ]
    poison = orjson.dumps(charging(fleet.serials[2], 0, slot=3, note=ABORT_MARKER))
    messages.insert(150, (topic, poison))
    settings = ingest_settings(
        TEST_DATABASE_URL, BROKER, prefix, ingest_test_abort_marker=ABORT_MARKER
    )
    with running_ingest(settings) as ingest:
        publisher.publish_many(messages)
        assert wait_for(lambda: stored_charging(valid) == 400, 60), stored_charging(valid)
        assert wait_for(lambda: dead_letter_reasons(DB, prefix) == ["writer_crash"], 30), (
            dead_letter_reasons(DB, prefix)
        )
        assert_alive(ingest)
        # Everything was acknowledged: nothing waits for the writer.
        assert wait_for(lambda: not ingest._in_flight)
        publisher.publish(topic, orjson.dumps(charging(valid[0], 1000, slot=1)))
        assert wait_for(lambda: stored_charging(valid) == 401)
        assert_alive(ingest)
    assert stored_charging(valid) == 401
    assert sessions_samples(valid) == 401
    assert stored_charging([fleet.serials[2]]) == 0
