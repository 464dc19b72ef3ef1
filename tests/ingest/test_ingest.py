"""The ingest against the real Mosquitto (127.0.0.1:1883) and the test database."""

import subprocess
from collections.abc import Iterator

import orjson
import psycopg
import pytest
from sqlalchemy import Engine

from app.core import metrics
from app.ingest.client import IngestService, libpq_url
from devices.contract import RecordKind, station_topic, vehicle_topic
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

DB = libpq_url(TEST_DATABASE_URL)
BROKER = "mqtt://127.0.0.1:1883"


@pytest.fixture
def fleet(engine: Engine) -> Fleet:
    return seed_fleet(engine)


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def ingest(engine: Engine, prefix: str) -> Iterator[IngestService]:
    with running_ingest(ingest_settings(TEST_DATABASE_URL, BROKER, prefix)) as service:
        yield service


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    pub = Publisher()
    yield pub
    pub.close()


def mosquitto_pub(topic: str, payload: dict[str, object] | bytes) -> None:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", "1883", "-q", "1", "-t", topic, "-s"],
        input=body,
        check=True,
        timeout=10,
    )


def test_records_published_with_mosquitto_pub_are_stored_once_each(
    ingest: IngestService, fleet: Fleet, prefix: str
) -> None:
    serial = fleet.serials[0]
    sample = charging(serial, 0, firmware="2.4.1")
    health = {
        "battery_serial": serial, "ts": ts(0), "soh_pct": 96.5, "internal_resistance_mohm": 1.2,
        "cell_voltage_min_v": 3.28, "cell_voltage_max_v": 3.31, "temp_c_max": 30.0,
        "cycle_count": 412,
    }  # fmt: skip
    capacity = {
        "battery_serial": serial, "ts": ts(0), "capacity_kwh": 136.2, "capacity_ah": 266.0,
        "method": "full_charge", "temp_c": 25.0,
    }  # fmt: skip
    drive = {
        "battery_serial": fleet.vehicle_serial, "ts": ts(0), "soc_pct": 63.0,
        "odometer_km": 120345.5, "pack_voltage_v": 540.0, "pack_current_a": -80.0,
        "temp_c_max": 33.0, "lat": 39.9, "lon": 116.4,
    }  # fmt: skip
    for _ in range(2):  # the second round is a republish: nothing new may be stored
        mosquitto_pub(station_topic(fleet.station_code, RecordKind.charging, prefix), sample)
        mosquitto_pub(station_topic(fleet.station_code, RecordKind.health, prefix), health)
        mosquitto_pub(station_topic(fleet.station_code, RecordKind.capacity, prefix), capacity)
        mosquitto_pub(vehicle_topic(fleet.vin, prefix), drive)
    assert wait_for(lambda: ingest.messages_received == 8)

    q = "SELECT count(*) FROM {} WHERE battery_serial = %s"
    assert wait_for(lambda: count(DB, q.format("vehicle_telemetry"), (fleet.vehicle_serial,)) == 1)
    assert count(DB, q.format("charging_samples"), (serial,)) == 1
    assert count(DB, q.format("health_records"), (serial,)) == 1
    assert count(DB, q.format("capacity_records"), (serial,)) == 1
    with psycopg.connect(DB) as conn:
        extra = conn.execute(
            "SELECT extra FROM charging_samples WHERE battery_serial = %s", (serial,)
        ).fetchone()
    assert extra == ({"firmware": "2.4.1"},)
    assert dead_letter_reasons(DB, prefix) == []


def test_batch_with_bad_records_stores_the_valid_ones_and_dead_letters_the_rest(
    ingest: IngestService, fleet: Fleet, prefix: str, publisher: Publisher
) -> None:
    serial = fleet.serials[0]
    records = [charging(serial, i * 10) for i in range(5)]
    records[1]["soc_pct"] = 130.0
    records[3]["temp_c_max"] = "hot"
    publisher.publish(
        station_topic(fleet.station_code, RecordKind.charging, prefix),
        orjson.dumps({"records": records}),
    )
    q = "SELECT count(*) FROM charging_samples WHERE battery_serial = %s"
    assert wait_for(lambda: count(DB, q, (serial,)) == 3)
    assert wait_for(lambda: len(dead_letter_reasons(DB, prefix)) == 2)
    with psycopg.connect(DB) as conn:
        rows = conn.execute(
            "SELECT reason, record_index, payload FROM dead_letters WHERE topic LIKE %s"
            " ORDER BY record_index",
            (prefix + "/%",),
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("impossible_value", 1), ("schema", 3)]
    assert orjson.loads(rows[0][2])["soc_pct"] == 130.0


def test_garbage_is_dead_lettered_by_reason_and_the_ingest_keeps_going(
    ingest: IngestService, fleet: Fleet, prefix: str, publisher: Publisher
) -> None:
    serial = fleet.serials[0]
    topic = station_topic(fleet.station_code, RecordKind.charging, prefix)
    capacity_topic = station_topic(fleet.station_code, RecordKind.capacity, prefix)
    before = metrics.INGEST_DEAD_LETTERS.labels("not_json")._value.get()
    missing_field = charging(serial, 1)
    del missing_field["energy_kwh"]
    garbage: list[tuple[str, bytes]] = [
        (topic, b"\x00\xffnot json"),
        (topic, orjson.dumps({**charging(serial, 2), "slot": "first"})),
        (topic, orjson.dumps(missing_field)),
        (topic, orjson.dumps(charging(serial, 3, soc_pct=-1))),
        (topic, orjson.dumps(charging(serial, 4, temp_c_max=151))),
        (
            capacity_topic,
            orjson.dumps(
                {
                    "battery_serial": serial,
                    "ts": ts(5),
                    "capacity_kwh": -3,
                    "capacity_ah": 1,
                    "method": "full_charge",
                    "temp_c": 20,
                }
            ),
        ),
        (topic, orjson.dumps(charging(serial, 0, ts="2099-01-01T00:00:00+00:00"))),
        (topic, orjson.dumps(charging(serial, 6, ts="2026-01-01T00:00:00"))),
        (
            station_topic("NOSUCHSTATION", RecordKind.charging, prefix),
            orjson.dumps(charging(serial, 7)),
        ),
        (vehicle_topic("NOSUCHVIN0000000", prefix), orjson.dumps({"battery_serial": serial})),
        (topic, orjson.dumps(charging("NOSUCHBATTERY", 8))),
        (topic, orjson.dumps(charging(fleet.other_station_serial, 9))),
        (topic, orjson.dumps(charging(serial, 10, slot=99))),
        (topic, orjson.dumps(charging(serial, 11, station_code=fleet.other_station_code))),
        (topic, b'{"records": [' + b",".join([orjson.dumps(charging(serial, 12))] * 1001) + b"]}"),
        (topic, b'{"pad": "' + b"x" * 600_000 + b'"}'),
        (f"{prefix}/stations/{fleet.station_code}/firmware", b"{}"),
        (topic, orjson.dumps(charging(serial, 100))),
    ]
    publisher.publish_many(garbage)
    q = "SELECT count(*) FROM charging_samples WHERE battery_serial = %s"
    assert wait_for(lambda: count(DB, q, (serial,)) == 1)
    assert wait_for(lambda: len(dead_letter_reasons(DB, prefix)) == len(garbage) - 1)
    reasons = dead_letter_reasons(DB, prefix)
    assert sorted(reasons) == sorted([
        "not_json", "schema", "schema", "impossible_value", "impossible_value",
        "impossible_value", "ts_in_future", "schema", "unknown_station", "schema",
        "unknown_battery", "identity_mismatch", "identity_mismatch", "identity_mismatch",
        "too_many_records", "oversized", "unknown_topic",
    ])  # fmt: skip
    # the unknown vehicle message is also a schema error: it is refused before the lookup
    assert metrics.INGEST_DEAD_LETTERS.labels("not_json")._value.get() == before + 1


def test_unknown_vehicle_is_dead_lettered(
    ingest: IngestService, fleet: Fleet, prefix: str, publisher: Publisher
) -> None:
    record = {
        "battery_serial": fleet.vehicle_serial, "ts": ts(0), "soc_pct": 50, "odometer_km": 1,
        "pack_voltage_v": 500, "pack_current_a": 0, "temp_c_max": 20,
    }  # fmt: skip
    publisher.publish(vehicle_topic("NOSUCHVIN0000000", prefix), orjson.dumps(record))
    publisher.publish(vehicle_topic(fleet.other_vin, prefix), orjson.dumps(record))
    assert wait_for(lambda: len(dead_letter_reasons(DB, prefix)) == 2)
    assert sorted(dead_letter_reasons(DB, prefix)) == ["identity_mismatch", "unknown_vehicle"]


def test_batteries_take_the_newest_soc_soh_and_cycles_only(
    ingest: IngestService, fleet: Fleet, prefix: str, publisher: Publisher
) -> None:
    serial = fleet.serials[0]
    health_topic = station_topic(fleet.station_code, RecordKind.health, prefix)

    def health(offset_s: float, soh: float, cycles: int) -> bytes:
        return orjson.dumps({
            "battery_serial": serial, "ts": ts(offset_s), "soh_pct": soh,
            "internal_resistance_mohm": 1.1, "cell_voltage_min_v": 3.2, "cell_voltage_max_v": 3.3,
            "temp_c_max": 30, "cycle_count": cycles,
        })  # fmt: skip

    publisher.publish(health_topic, health(100, 91.5, 800))
    publisher.publish(
        station_topic(fleet.station_code, RecordKind.charging, prefix),
        orjson.dumps(charging(serial, 200, soc_pct=77.0)),
    )
    q = "SELECT count(*) FROM batteries WHERE serial = %s AND soc_pct = 77 AND soh_pct = 91.5"
    assert wait_for(lambda: count(DB, q, (serial,)) == 1)
    publisher.publish(health_topic, health(50, 99.0, 10))  # older than what is known
    q = "SELECT count(*) FROM health_records WHERE battery_serial = %s"
    assert wait_for(lambda: count(DB, q, (serial,)) == 2)
    with psycopg.connect(DB) as conn:
        row = conn.execute(
            "SELECT soc_pct, soh_pct, equivalent_full_cycles,"
            " readings_at = (SELECT ts FROM charging_samples c WHERE c.battery_serial = serial)"
            " FROM batteries WHERE serial = %s",
            (serial,),
        ).fetchone()
    assert row is not None
    assert row == (77.0, 91.5, 800.0, True)


def test_health_record_arriving_after_a_newer_soc_reading_updates_soh_and_cycles(
    ingest: IngestService, fleet: Fleet, prefix: str, publisher: Publisher
) -> None:
    """Each field is judged by its own measured-at time (issue 14): a SoC reading at 200 s
    does not make the health record of 100 s look old, while an older or resent health
    record never replaces the newer one."""
    serial = fleet.serials[0]
    health_topic = station_topic(fleet.station_code, RecordKind.health, prefix)

    def health(offset_s: float, soh: float, cycles: int) -> bytes:
        return orjson.dumps({
            "battery_serial": serial, "ts": ts(offset_s), "soh_pct": soh,
            "internal_resistance_mohm": 1.1, "cell_voltage_min_v": 3.2, "cell_voltage_max_v": 3.3,
            "temp_c_max": 30, "cycle_count": cycles,
        })  # fmt: skip

    publisher.publish(
        station_topic(fleet.station_code, RecordKind.charging, prefix),
        orjson.dumps(charging(serial, 200, soc_pct=77.0)),
    )
    q = "SELECT count(*) FROM batteries WHERE serial = %s AND soc_pct = 77"
    assert wait_for(lambda: count(DB, q, (serial,)) == 1)
    publisher.publish(health_topic, health(100, 91.5, 800))
    publisher.publish(health_topic, health(50, 99.0, 10))  # older than the one before
    publisher.publish(health_topic, health(100, 91.5, 800))  # resent
    q = "SELECT count(*) FROM health_records WHERE battery_serial = %s"
    assert wait_for(lambda: count(DB, q, (serial,)) == 2)
    q = "SELECT count(*) FROM batteries WHERE serial = %s AND equivalent_full_cycles = 800"
    assert wait_for(lambda: count(DB, q, (serial,)) == 1)
    with psycopg.connect(DB) as conn:
        row = conn.execute(
            "SELECT soc_pct, soh_pct, equivalent_full_cycles, soh_source, cycles_source,"
            " soc_measured_at = (SELECT ts FROM charging_samples c"
            " WHERE c.battery_serial = serial),"
            " soh_measured_at = (SELECT max(ts) FROM health_records h"
            " WHERE h.battery_serial = serial),"
            " cycles_measured_at = soh_measured_at, soh_measured_at < soc_measured_at,"
            " readings_at = soc_measured_at FROM batteries WHERE serial = %s",
            (serial,),
        ).fetchone()
    assert row == (
        77.0,
        91.5,
        800.0,
        "health_record",
        "health_record",
        True,
        True,
        True,
        True,
        True,
    )


def test_station_goes_online_with_status_and_offline_with_its_last_will(
    ingest: IngestService, fleet: Fleet, prefix: str
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    topic = station_topic(fleet.station_code, RecordKind.status, prefix)
    station = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    station.will_set(topic, orjson.dumps({"online": False}), qos=1, retain=True)
    station.connect("127.0.0.1", 1883, keepalive=5)
    station.loop_start()
    status = {"online": True, "ts": ts(3600), "slots": [{"slot": 1, "state": "charging"}]}
    station.publish(topic, orjson.dumps(status), qos=1, retain=True).wait_for_publish(5)
    q = "SELECT count(*) FROM stations WHERE code = %s AND online AND last_seen_at IS NOT NULL"
    assert wait_for(lambda: count(DB, q, (fleet.station_code,)) == 1)
    # Drop the connection without DISCONNECT, as a power cut would: the broker sends the will.
    station.loop_stop()
    sock = station.socket()
    assert sock is not None
    sock.close()
    q = "SELECT count(*) FROM stations WHERE code = %s AND NOT online"
    assert wait_for(lambda: count(DB, q, (fleet.station_code,)) == 1, timeout=15)
    Publisher().publish(topic, b"", retain=True)  # clear the retained will


def test_charging_samples_roll_up_into_sessions_split_by_gaps(
    ingest: IngestService, fleet: Fleet, prefix: str, publisher: Publisher
) -> None:
    serial = fleet.serials[1]
    topic = station_topic(fleet.station_code, RecordKind.charging, prefix)
    first = [charging(serial, t, slot=2, soc_pct=20 + t / 60, energy_kwh=t / 60,
                      temp_c_max=30 + t / 300) for t in range(0, 1200, 60)]  # fmt: skip
    second = [charging(serial, 3000 + t, slot=2, soc_pct=50 + t / 60, energy_kwh=t / 60)
              for t in range(0, 300, 60)]  # fmt: skip
    publisher.publish(topic, orjson.dumps({"records": first[:10]}))
    publisher.publish(topic, orjson.dumps({"records": first[10:] + second}))
    publisher.publish(topic, orjson.dumps({"records": first[5:15]}))  # a redelivery
    q = "SELECT count(*) FROM charging_samples WHERE battery_serial = %s"
    assert wait_for(lambda: count(DB, q, (serial,)) == 25)
    assert wait_for(lambda: ingest.messages_received == 3)
    with psycopg.connect(DB) as conn:
        rows = conn.execute(
            "SELECT slot, started_at, ended_at, soc_from_pct, soc_to_pct,"
            " energy_end_kwh - energy_start_kwh, peak_temp_c, sample_count"
            " FROM charging_sessions WHERE battery_serial = %s ORDER BY started_at",
            (serial,),
        ).fetchall()
    assert [(r[0], r[3], r[4], r[5], r[6], r[7]) for r in rows] == [
        (2, 20.0, 39.0, 19.0, 30 + 1140 / 300, 20),
        (2, 50.0, 54.0, 4.0, 31.0, 5),
    ]
    assert (rows[0][2] - rows[0][1]).total_seconds() == 1140


def test_two_ingests_in_one_share_group_split_the_stream_without_loss_or_doubles(
    engine: Engine, fleet: Fleet, prefix: str, publisher: Publisher
) -> None:
    group = f"g{prefix[7:17]}"
    first_settings = ingest_settings(TEST_DATABASE_URL, BROKER, prefix)
    second_settings = ingest_settings(TEST_DATABASE_URL, BROKER, prefix)
    topic = station_topic(fleet.station_code, RecordKind.charging, prefix)
    with (
        running_ingest(first_settings, share_group=group) as first,
        running_ingest(second_settings, share_group=group) as second,
    ):
        publisher.publish_many(
            [
                (topic, orjson.dumps(charging(fleet.serials[i % 3], i, slot=i % 3 + 1)))
                for i in range(3000)
            ]  # fmt: skip
        )
        q = "SELECT count(*) FROM charging_samples WHERE battery_serial = ANY(%s)"
        assert wait_for(lambda: count(DB, q, (fleet.serials,)) == 3000)
        assert wait_for(lambda: first.messages_received + second.messages_received == 3000)
    assert first.messages_received > 0
    assert second.messages_received > 0
    q = (
        "SELECT coalesce(sum(sample_count), 0) FROM charging_sessions"
        " WHERE battery_serial = ANY(%s)"
    )
    assert count(DB, q, (fleet.serials,)) == 3000
