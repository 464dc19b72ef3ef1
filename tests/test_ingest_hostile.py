"""No message ends the ingest (issue 11, finding 1): what used to kill its writer process is
dead-lettered, the messages around it are stored once, and a message that does kill the
writer is recognised and dead-lettered instead of killing it again and again."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from app.ingest.client import IngestService, libpq_url
from devices.contract import RECORD_MODELS, RecordKind, station_topic, vehicle_topic
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.ingest_harness import (
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
        # Extra fields that jsonb refuses: found by the property-based test below.
        (charging_topic, with_raw_field(charging(hostile, 5, slot=3), "x", b"-Infinity")),
        (charging_topic, with_raw_field(charging(hostile, 6, slot=3), "x", b'"\\u0000"')),
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
    # The timestamps and the cycle count are beyond the contract's bounds; the extra fields
    # cannot be stored in jsonb (and -Infinity is not JSON).
    assert sorted(reasons) == ["impossible_value"] * 3 + ["not_json"] + ["schema"] * 2, reasons


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


# ---- property-based: hostile payloads generated from the contract's schema ----------------
#
# Every field of every record kind gets either a valid value or a hostile one, as raw JSON
# text (orjson, like devices, cannot write some of them): timestamps at the ends of the
# calendar with offsets that push them past it, numbers beyond float and int64, deep nesting,
# odd unicode. Each hostile message goes between two valid records, which must be stored
# exactly once while the ingest keeps running.

HOSTILE_TS = [
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59.999999+00:00",
    "0001-01-01T00:00:00Z",
    "1970-01-01T00:00:00+00:00",
    "2026-02-30T00:00:00Z",
    "2026-01-01T00:00:00+24:00",
    "",
]
HOSTILE_NUMBERS = [
    "1e308", "-1e308", "1.7976931348623157e308", "1e400", "-1e400", "5e-324", "-0.0",
    str(10**30), str(-(10**30)), str(2**63), str(-(2**63) - 1), str(2**64), str(2**31),
    "1" + "0" * 400, "NaN", "Infinity", "-Infinity",
]  # fmt: skip
ODD_TEXT = ["\u0000", "\u202e\u001b[2J", "\U0001d518\U0001d52b\U0001d526", "\ufeff", "é" * 70]
NESTING = [10, 254, 255, 256, 1000, 1023, 1024, 1100]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def hostile_value() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_NUMBERS),
        st.sampled_from(HOSTILE_TS).map(_json),
        st.sampled_from(ODD_TEXT).map(_json),
        st.text(st.characters(exclude_categories=("Cs",)), max_size=40).map(_json),
        st.sampled_from(NESTING).map(lambda depth: nested(depth).decode()),
        st.sampled_from(["null", "true", "[]", "{}", '[{"records": []}]']),
    )


def valid_value(name: str, schema: dict[str, Any], serials: list[str]) -> st.SearchStrategy[str]:
    if name == "ts":
        minutes = st.integers(-14 * 60, 14 * 60)
        return st.tuples(st.integers(0, 3000), minutes).map(lambda p: _json(offset_ts(*p)))
    if name == "battery_serial":
        return st.sampled_from(serials).map(_json)
    if name == "slot":
        return st.one_of(st.sampled_from(["3", "4"]), st.integers(1, 1000).map(str))
    if "enum" in schema:
        return st.sampled_from(schema["enum"]).map(_json)
    low, high = schema.get("minimum"), schema.get("maximum")
    if schema.get("type") == "integer":
        return st.one_of(st.sampled_from([low, high]), st.integers(low, high)).map(str)
    if schema.get("type") == "number":
        bounds = st.sampled_from([low, high])
        return st.one_of(bounds, st.floats(low, high, allow_nan=False)).map(_json)
    if schema.get("type") == "boolean":
        return st.booleans().map(_json)
    return st.just("null")


def offset_ts(seconds: int, offset_minutes: int) -> str:
    instant = datetime.fromisoformat(ts(seconds))
    return instant.astimezone(timezone(timedelta(minutes=offset_minutes))).isoformat()


@st.composite
def hostile_record(draw: st.DrawFn, kind: RecordKind, serials: list[str]) -> str:
    """A record whose fields are all valid (extreme values and offsets included), or of
    which one or several are hostile or missing; often with a hostile extra field, which
    the contract keeps and the ingest stores."""
    schema = RECORD_MODELS[kind].model_json_schema()
    names = [
        name for name in schema["properties"] if not (kind is RecordKind.status and name == "slots")
    ]
    mode = draw(st.sampled_from(["valid", "one", "several"]))
    chosen = draw(st.sampled_from(names)) if mode == "one" else None
    fields: dict[str, str] = {}
    for name in names:
        hostile = name == chosen or (mode == "several" and draw(st.integers(0, 3)) == 0)
        if hostile and draw(st.integers(0, 4)) == 0 and name in schema.get("required", []):
            continue  # missing
        prop = schema["properties"][name]
        if "$ref" in prop:  # an enum, defined once
            prop = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]]
        fields[name] = draw(hostile_value() if hostile else valid_value(name, prop, serials))
    if draw(st.booleans()):
        key = draw(st.sampled_from(["extra", "\u202e", "deep", "records", "vin", "station_code"]))
        fields[key] = draw(hostile_value())
    return "{" + ",".join(f"{_json(k)}:{v}" for k, v in fields.items()) + "}"


@st.composite
def hostile_message(draw: st.DrawFn, fleet: Fleet, prefix: str) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(list(RecordKind)))
    if kind is RecordKind.vehicle:
        topic, serials = vehicle_topic(fleet.vin, prefix), [fleet.vehicle_serial]
    else:
        topic, serials = station_topic(fleet.station_code, kind, prefix), fleet.serials[2:]
    records = draw(st.lists(hostile_record(kind, serials), min_size=1, max_size=3))
    if len(records) == 1 and draw(st.booleans()):
        return topic, records[0].encode()
    return topic, ('{"records":[' + ",".join(records) + "]}").encode()


@pytest.mark.property
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_property_hostile_payloads_never_stop_the_ingest_and_valid_neighbours_are_stored_once(
    data: st.DataObject, hostile_world: "HostileWorld"
) -> None:
    world = hostile_world
    topic, payload = data.draw(hostile_message(world.fleet, world.prefix))
    valid = world.fleet.serials[:2]
    charging_topic = station_topic(world.fleet.station_code, RecordKind.charging, world.prefix)
    before = world.published
    world.publisher.publish_many(
        [
            (charging_topic, orjson.dumps(charging(valid[0], before, slot=1))),
            (topic, payload),
            (charging_topic, orjson.dumps(charging(valid[1], before, slot=2))),
        ]
    )
    world.published += 1
    expected = 2 * world.published
    assert wait_for(lambda: stored_charging(valid) >= expected, 30), (
        payload[:300],
        stored_charging(valid),
    )
    assert stored_charging(valid) == expected, payload[:300]
    assert_alive(world.ingest)


@dataclass
class HostileWorld:
    fleet: Fleet
    prefix: str
    ingest: IngestService
    publisher: Publisher
    published: int = 0


@pytest.fixture
def hostile_world(fleet: Fleet, prefix: str, publisher: Publisher) -> Iterator[HostileWorld]:
    with running_ingest(ingest_settings(TEST_DATABASE_URL, BROKER, prefix)) as ingest:
        world = HostileWorld(fleet, prefix, ingest, publisher)
        yield world
        # Whatever was refused, every message was answered and acknowledged...
        assert wait_for(lambda: not ingest._in_flight)
        assert_alive(ingest)
    # ...and derived state counts every valid record once.
    assert sessions_samples(fleet.serials[:2]) == 2 * world.published
