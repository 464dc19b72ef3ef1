"""The swap roll-up and an ingest batch write the same battery_daily rows without a lock
cycle: real concurrent transactions on committed data, driven step by step."""

from collections.abc import Iterator
from datetime import datetime

import orjson
import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.core import clock
from app.ingest.payloads import decode_message
from app.ingest.writer import BatchWriter, WriteResult, libpq_url
from app.rollups.swaps import roll_up_swaps
from devices.contract import RecordKind, station_topic
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.committed import truncate_all
from tests.fixtures.ingest_harness import (
    Fleet,
    charging,
    ingest_settings,
    seed_fleet,
    ts,
    unique_prefix,
)
from tests.fixtures.lock_steps import Step, backend_pid, someone_waits_for, wait_until

DB = libpq_url(TEST_DATABASE_URL)


@pytest.fixture
def fleet(engine: Engine) -> Iterator[Fleet]:
    yield seed_fleet(engine, batteries=2)
    truncate_all(engine)


def health(serial: str, offset_s: float) -> dict[str, object]:
    return {
        "battery_serial": serial, "ts": ts(offset_s), "soh_pct": 95.0,
        "internal_resistance_mohm": 1.1, "cell_voltage_min_v": 3.2, "cell_voltage_max_v": 3.3,
        "temp_c_max": 30, "cycle_count": 100,
    }  # fmt: skip


def test_the_swap_rollup_and_an_ingest_batch_do_not_deadlock_on_battery_daily(
    engine: Engine, fleet: Fleet
) -> None:
    """A batch writes battery_daily one statement per record kind, each in key order: health
    records of battery B, then charging samples of A, A before B. The roll-up writes the rows
    of a swap of A and B in one statement in key order, A then B. Holding B's row and then
    wanting A's, the batch closed a cycle with a roll-up that held A's and wanted B's."""
    prefix = unique_prefix()
    settings = ingest_settings(TEST_DATABASE_URL, "mqtt://127.0.0.1:1", prefix)
    first, second = sorted(fleet.serials)
    slot = {serial: n for n, serial in enumerate(fleet.serials, start=1)}
    station = fleet.station_code

    def batch(offset_s: float) -> list[object]:
        now = clock.now()
        return [
            decode_message(
                station_topic(station, RecordKind.health, prefix),
                orjson.dumps(health(second, offset_s)),
                settings=settings,
                received_at=now,
            ),
            decode_message(
                station_topic(station, RecordKind.charging, prefix),
                orjson.dumps(charging(first, offset_s, slot=slot[first])),
                settings=settings,
                received_at=now,
            ),
        ]

    writer = BatchWriter(DB, settings)
    try:
        # The battery-day and battery-month rows exist: the next writes update them.
        writer.write(batch(0.0))  # type: ignore[arg-type]
        day = datetime.fromisoformat(ts(0.0)).date()
        with engine.begin() as connection:
            # A completed swap of the two batteries that day, queued for the roll-up.
            connection.execute(
                text(
                    "INSERT INTO swap_events (id, station_id, vehicle_id, vin,"
                    " removed_battery_id, removed_battery_serial, installed_battery_id,"
                    " installed_battery_serial, started_at, finished_at, outcome)"
                    " SELECT gen_random_uuid(), s.id, v.id, v.vin, r.id, r.serial, i.id, i.serial,"
                    " :at, :at, 'completed'"
                    " FROM stations s, vehicles v, batteries r, batteries i"
                    " WHERE s.code = :station AND v.vin = :vin AND r.serial = :removed"
                    " AND i.serial = :installed"
                ),
                {
                    "at": ts(0.0),
                    "station": station,
                    "vin": fleet.vin,
                    "removed": second,
                    "installed": first,
                },
            )
        writer_pid = writer.connection().info.backend_pid
        with Session(engine) as holder:
            # Holds up the batch after its health statement wrote B's day (its trigger then
            # updates B's month) ...
            holder.execute(
                text(
                    "SELECT 1 FROM battery_monthly WHERE battery_serial = :s"
                    " AND month = date_trunc('month', CAST(:day AS date)) FOR SHARE"
                ),
                {"s": second, "day": day},
            )
            ingest = Step(lambda: writer.write(batch(60.0)))  # type: ignore[arg-type]
            wait_until(lambda: someone_waits_for(engine, backend_pid(holder)))

            def roll_up() -> int:
                with engine.begin() as connection:
                    connection.execute(text("SET LOCAL lock_timeout = '10s'"))
                    return roll_up_swaps(connection, wait=True)

            # ... the roll-up writes A's day and waits for B's ...
            rollup = Step(roll_up)
            wait_until(lambda: someone_waits_for(engine, writer_pid))
            # ... and the batch, let go on, writes its charging samples: A's day.
            holder.rollback()
            written = ingest.result()
            assert isinstance(written, WriteResult), written
            assert written.stored == {RecordKind.health: 1, RecordKind.charging: 1}
            assert rollup.result() == 1
    finally:
        writer.close()
    with psycopg.connect(DB) as conn:
        rows = conn.execute(
            "SELECT battery_serial, swaps_in, swaps_out, health_records, charging_samples"
            " FROM battery_daily WHERE battery_serial = ANY(%s) AND day = %s"
            " ORDER BY battery_serial",
            ([first, second], day),
        ).fetchall()
    assert rows == [(first, 1, 0, 0, 2), (second, 0, 1, 2, 0)]
