"""Messages validated whole from their bytes decode to what record-by-record validation gives,
and a record refused later still keeps its own JSON in its dead letter."""

import orjson
from app.core import clock
from app.core.config import Settings

from app.ingest import payloads
from app.ingest.payloads import decode_message
from devices.contract import RecordKind, station_topic, validate_record
from tests.fixtures.ingest_harness import charging

SETTINGS = Settings(
    environment="test",
    database_url="postgresql://unused@127.0.0.1/unused",
    mqtt_url="mqtt://127.0.0.1:1",
    ingest_metrics_port=None,
)
TOPIC = station_topic("ST-WHOLE", RecordKind.charging, SETTINGS.mqtt_topic_prefix)


def test_a_valid_batch_validated_whole_equals_record_by_record_validation() -> None:
    records = [charging("BAT-W", i * 10.0, slot=2, firmware="2.1") for i in range(5)]
    payload = orjson.dumps({"records": records, "device": "x"})
    assert payloads._validate_whole(RecordKind.charging, payload) is not None

    message = decode_message(TOPIC, payload, settings=SETTINGS, received_at=clock.now())

    assert not message.dead_letters
    assert [d.index for d in message.records] == list(range(5))
    expected = [validate_record(RecordKind.charging, r).model_dump() for r in records]
    assert [d.record.model_dump() for d in message.records] == expected
    assert message.records[0].record.model_extra == {"firmware": "2.1"}


def test_a_bare_record_validated_whole_has_no_index() -> None:
    payload = orjson.dumps(charging("BAT-W", 0.0))
    message = decode_message(TOPIC, payload, settings=SETTINGS, received_at=clock.now())
    assert [d.index for d in message.records] == [None]
    assert message.records[0].record.battery_serial == "BAT-W"  # type: ignore[attr-defined]


def test_a_batch_with_one_bad_record_still_names_that_record() -> None:
    records = [charging("BAT-W", 0.0), charging("BAT-W", 10.0, soc_pct=140.0)]
    payload = orjson.dumps({"records": records})
    assert payloads._validate_whole(RecordKind.charging, payload) is None

    message = decode_message(TOPIC, payload, settings=SETTINGS, received_at=clock.now())

    assert [d.index for d in message.records] == [0]
    (dead,) = message.dead_letters
    assert (dead.reason, dead.record_index) == ("impossible_value", 1)
    assert orjson.loads(dead.payload) == records[1]


def test_a_refusal_of_a_record_validated_whole_keeps_its_own_json() -> None:
    records = [charging("BAT-W", i * 10.0, note=f"n{i}") for i in range(3)]
    payload = orjson.dumps({"records": records})
    message = decode_message(TOPIC, payload, settings=SETTINGS, received_at=clock.now())
    decoded = message.records[1]
    assert decoded.raw is None

    refused = message.refusal(
        "identity_mismatch", "elsewhere", limit=4096, index=decoded.index, raw=decoded.raw
    )

    assert refused.record_index == 1
    assert orjson.loads(refused.payload) == records[1]
    assert refused.payload_bytes == len(refused.payload)
