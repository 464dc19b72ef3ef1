"""Records are judged by where their battery was at their ts, not where it is now: late
(outbox) and backfilled telemetry must survive the swaps that happened since."""

from collections.abc import Iterator
from datetime import timedelta

import orjson
import pytest
from app.core import clock
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from app.batteries.custody import relocate
from app.ingest.client import IngestService, libpq_url
from app.models import Battery, CustodyCause, CustodyEvent, LocationKind, Station
from devices.contract import RecordKind, station_topic, vehicle_topic
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.factories import slot_of
from tests.fixtures.ingest_harness import (
    Fleet,
    Publisher,
    count,
    ingest_settings,
    running_ingest,
    seed_fleet,
    unique_prefix,
    wait_for,
)

DB = libpq_url(TEST_DATABASE_URL)
NOW = clock.now().replace(microsecond=0)


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def swapped_out(engine: Engine) -> Fleet:
    """The vehicle's battery was registered 2 h ago and taken out into slot 4 30 min ago."""
    fleet = seed_fleet(engine)
    with Session(engine) as session, session.begin():
        battery = session.scalar(select(Battery).where(Battery.serial == fleet.vehicle_serial))
        assert battery is not None
        session.execute(
            update(CustodyEvent)
            .where(CustodyEvent.battery_id == battery.id)
            .values(at=NOW - timedelta(hours=2))
        )
        station = session.scalar(select(Station).where(Station.code == fleet.station_code))
        assert station is not None
        relocate(
            session,
            battery,
            kind=LocationKind.slot,
            slot_id=slot_of(session, station, 4).id,
            cause=CustodyCause.manual_move,
            at=NOW - timedelta(minutes=30),
        )
    return fleet


@pytest.fixture
def ingest(engine: Engine, prefix: str) -> Iterator[IngestService]:
    with running_ingest(ingest_settings(TEST_DATABASE_URL, "mqtt://127.0.0.1:1883", prefix)) as s:
        yield s


def telemetry(serial: str, minutes_ago: int) -> bytes:
    return orjson.dumps({
        "battery_serial": serial, "ts": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "soc_pct": 50, "odometer_km": 1000 - minutes_ago, "pack_voltage_v": 500,
        "pack_current_a": -20, "temp_c_max": 25,
    })  # fmt: skip


def sample(serial: str, minutes_ago: int) -> bytes:
    return orjson.dumps({
        "battery_serial": serial, "slot": 4,
        "ts": (NOW - timedelta(minutes=minutes_ago)).isoformat(), "soc_pct": 30,
        "voltage_v": 510, "current_a": 100, "power_kw": 51, "temp_c_min": 22,
        "temp_c_max": 27, "energy_kwh": 1.0,
    })  # fmt: skip


def test_records_are_checked_against_custody_at_their_timestamp(
    ingest: IngestService, swapped_out: Fleet, prefix: str
) -> None:
    fleet = swapped_out
    vehicle = vehicle_topic(fleet.vin, prefix)
    charging = station_topic(fleet.station_code, RecordKind.charging, prefix)
    publisher = Publisher()
    try:
        publisher.publish(vehicle, telemetry(fleet.vehicle_serial, 60))  # in the vehicle then
        publisher.publish(vehicle, telemetry(fleet.vehicle_serial, 5))  # in the slot by then
        publisher.publish(charging, sample(fleet.vehicle_serial, 60))  # not yet at the station
        publisher.publish(charging, sample(fleet.vehicle_serial, 5))  # at the station
        publisher.publish(charging, sample(fleet.vehicle_serial, 33))  # within the grace period
    finally:
        publisher.close()

    def landed() -> int:
        return count(DB, "SELECT count(*) FROM dead_letters WHERE topic LIKE %s", (prefix + "/%",))

    def stored_telemetry() -> int:
        return count(DB, "SELECT count(*) FROM vehicle_telemetry WHERE vin = %s", (fleet.vin,))

    def stored_samples() -> int:
        return count(
            DB,
            "SELECT count(*) FROM charging_samples WHERE battery_serial = %s",
            (fleet.vehicle_serial,),
        )

    assert wait_for(lambda: (landed(), stored_telemetry(), stored_samples()) == (2, 1, 2))
    kept = count(
        DB,
        "SELECT count(*) FROM vehicle_telemetry WHERE vin = %s AND ts = %s",
        (fleet.vin, NOW - timedelta(minutes=60)),
    )
    assert kept == 1
    mismatches = count(
        DB,
        "SELECT count(*) FROM dead_letters WHERE topic LIKE %s AND reason = 'identity_mismatch'",
        (prefix + "/%",),
    )
    assert mismatches == 2


@pytest.fixture
def backfilled(engine: Engine) -> Fleet:
    """Like a backfill: registered now in the vehicle, with a move dated 2 h in the past."""
    fleet = seed_fleet(engine)
    with Session(engine) as session, session.begin():
        battery = session.scalar(select(Battery).where(Battery.serial == fleet.vehicle_serial))
        assert battery is not None
        station = session.scalar(select(Station).where(Station.code == fleet.station_code))
        assert station is not None
        relocate(
            session,
            battery,
            kind=LocationKind.slot,
            slot_id=slot_of(session, station, 4).id,
            cause=CustodyCause.swap,
            at=NOW - timedelta(hours=2),
        )
    return fleet


def test_records_older_than_the_whole_history_are_judged_by_the_first_moves_origin(
    ingest: IngestService, backfilled: Fleet, prefix: str
) -> None:
    fleet = backfilled
    publisher = Publisher()
    try:
        # 3 h ago the battery was still in the vehicle the 2 h old move took it out of.
        publisher.publish(vehicle_topic(fleet.vin, prefix), telemetry(fleet.vehicle_serial, 180))
        publisher.publish(
            station_topic(fleet.station_code, RecordKind.charging, prefix),
            sample(fleet.vehicle_serial, 180),
        )
    finally:
        publisher.close()

    def outcome() -> tuple[int, int, int]:
        return (
            count(DB, "SELECT count(*) FROM vehicle_telemetry WHERE vin = %s", (fleet.vin,)),
            count(
                DB,
                "SELECT count(*) FROM charging_samples WHERE battery_serial = %s",
                (fleet.vehicle_serial,),
            ),
            count(
                DB,
                "SELECT count(*) FROM dead_letters WHERE topic LIKE %s"
                " AND reason = 'identity_mismatch'",
                (prefix + "/%",),
            ),
        )

    assert wait_for(lambda: outcome() == (1, 0, 1)), outcome()
