"""A device may write records only for batteries that were with it at the record's ts
(issue 11, finding 9): a station for those in its slots, a vehicle for the one it carried,
give or take the custody grace period. A battery in the warehouse, in transit, in another
fleet's vehicle or at another station is refused as identity_mismatch."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import orjson
import pytest
from app.core import clock
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from app.batteries.custody import relocate
from app.ingest.client import IngestService, libpq_url
from app.models import CustodyCause, CustodyEvent, LocationKind, OrgRole, Station
from devices.contract import RecordKind, station_topic, vehicle_topic
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures import factories
from tests.fixtures.ingest_harness import (
    Fleet,
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

DB = libpq_url(TEST_DATABASE_URL)
NOW = clock.now().replace(microsecond=0)


@dataclass
class Elsewhere:
    fleet: Fleet
    warehouse: str
    in_transit: str
    other_fleets_vehicle: str
    left_long_ago: str


@pytest.fixture
def elsewhere(engine: Engine) -> Elsewhere:
    fleet = seed_fleet(engine)
    with Session(engine) as session, session.begin():
        operator = factories.make_org(session)
        other_oem = factories.make_org(session, OrgRole.oem)
        pack = factories.make_pack_type(session)
        station = session.scalar(select(Station).where(Station.code == fleet.station_code))
        assert station is not None
        other_vehicle = factories.make_vehicle(
            session, factories.make_vehicle_model(session, other_oem, pack)
        )
        warehouse = factories.make_battery(session, pack, operator)
        in_transit = factories.make_battery(session, pack, operator)
        in_vehicle = factories.make_battery(session, pack, operator, vehicle=other_vehicle)
        left = factories.make_battery(
            session, pack, operator, slot=factories.slot_of(session, station, 4)
        )
        batteries = [warehouse, in_transit, in_vehicle, left]
        # Registered 3 h ago, so that records of an hour ago are judged by custody, not
        # by the origin of a history they precede.
        session.execute(
            update(CustodyEvent)
            .where(CustodyEvent.battery_id.in_([b.id for b in batteries]))
            .values(at=NOW - timedelta(hours=3))
        )
        relocate(
            session, in_transit, kind=LocationKind.in_transit,
            cause=CustodyCause.manual_move, at=NOW - timedelta(hours=2),
        )  # fmt: skip
        relocate(
            session, left, kind=LocationKind.warehouse,
            cause=CustodyCause.manual_move, at=NOW - timedelta(hours=2),
        )  # fmt: skip
        serials = [b.serial for b in batteries]
    return Elsewhere(fleet, *serials)


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def ingest(engine: Engine, prefix: str) -> Iterator[IngestService]:
    with running_ingest(ingest_settings(TEST_DATABASE_URL, "mqtt://127.0.0.1:1883", prefix)) as s:
        yield s


def at(minutes_ago: int) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat()


def health(serial: str, minutes_ago: int) -> bytes:
    return orjson.dumps({
        "battery_serial": serial, "ts": at(minutes_ago), "soh_pct": 5.0,
        "internal_resistance_mohm": 900.0, "cell_voltage_min_v": 2.9,
        "cell_voltage_max_v": 3.4, "temp_c_max": 30.0, "cycle_count": 90_000,
    })  # fmt: skip


def drive(serial: str, minutes_ago: int) -> bytes:
    return orjson.dumps({
        "battery_serial": serial, "ts": at(minutes_ago), "soc_pct": 50, "odometer_km": 1000,
        "pack_voltage_v": 500, "pack_current_a": -20, "temp_c_max": 25,
    })  # fmt: skip


def test_a_station_writes_only_for_batteries_in_its_slots_and_a_vehicle_for_its_own(
    ingest: IngestService, elsewhere: Elsewhere, prefix: str
) -> None:
    fleet = elsewhere.fleet
    charging_topic = station_topic(fleet.station_code, RecordKind.charging, prefix)
    health_topic = station_topic(fleet.station_code, RecordKind.health, prefix)
    foreign = [
        elsewhere.warehouse,
        elsewhere.in_transit,
        elsewhere.other_fleets_vehicle,
        elsewhere.left_long_ago,
        fleet.other_station_serial,
        fleet.vehicle_serial,
    ]
    messages = [(health_topic, health(serial, 60)) for serial in foreign]
    messages += [
        (charging_topic, orjson.dumps(charging(serial, 0, slot=4, ts=at(60)))) for serial in foreign
    ]
    vehicle = vehicle_topic(fleet.vin, prefix)
    messages += [
        (vehicle, drive(serial, 60)) for serial in foreign if serial != fleet.vehicle_serial
    ]
    # What is theirs is stored.
    messages += [
        (health_topic, health(fleet.serials[0], 60)),
        (vehicle, drive(fleet.vehicle_serial, 60)),
    ]
    publisher = Publisher()
    try:
        publisher.publish_many(messages)
    finally:
        publisher.close()
    refused = 3 * len(foreign) - 1
    assert wait_for(lambda: len(dead_letter_reasons(DB, prefix)) >= refused), dead_letter_reasons(
        DB, prefix
    )
    assert wait_for(
        lambda: (
            count(DB, "SELECT count(*) FROM vehicle_telemetry WHERE vin = %s", (fleet.vin,)) == 1
        )
    )
    assert dead_letter_reasons(DB, prefix) == ["identity_mismatch"] * refused
    for table, serials in [
        ("health_records", foreign),
        ("charging_samples", foreign),
        ("vehicle_telemetry", foreign[:-1]),
    ]:
        stored = count(
            DB, f"SELECT count(*) FROM {table} WHERE battery_serial = ANY(%s)", (serials,)
        )
        assert stored == 0, table
    assert (
        count(
            DB, "SELECT count(*) FROM health_records WHERE battery_serial = %s", (fleet.serials[0],)
        )
        == 1
    )
