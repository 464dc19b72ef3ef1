"""A batch the database refuses is written again message by message (writer.write_with_retry):
those single messages must be written before the next job's rows, as the whole batch would
have been. Issue 13, item 4: with several writers in the writer process, the next job
inserted as soon as the first single message had, the later single messages then waited in
PostgreSQL for the next job's keys while it waited for their commit, until a 10 s time-out
rolled it back (counted as a retry)."""

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import psycopg
import pytest
from sqlalchemy import Engine

from app.core import clock
from app.ingest.client import libpq_url
from app.ingest.worker import READY, JobOutcome, serve
from devices.contract import RecordKind, station_topic
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.ingest_harness import charging, ingest_settings, seed_fleet, unique_prefix

DB = libpq_url(TEST_DATABASE_URL)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def refusing_marker() -> Iterator[str]:
    """A real refusal by PostgreSQL: a trigger that raises for a record carrying the marker in
    its extra fields, as a constraint would. Dropped after the test."""
    marker = f"refuse_{uuid.uuid4().hex[:10]}"
    function = f"test_{marker}"
    with psycopg.connect(DB, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN IF NEW.extra ? '{marker}' THEN"
            "   RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation';"
            " END IF; RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER {marker} BEFORE INSERT ON charging_samples"
            f" FOR EACH ROW EXECUTE FUNCTION {function}()"
        )
    try:
        yield marker
    finally:
        with psycopg.connect(DB, autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER {marker} ON charging_samples")
            conn.execute(f"DROP FUNCTION {function}()")


def test_a_split_batch_is_written_message_by_message_before_the_next_job(
    engine: Engine, refusing_marker: str
) -> None:
    prefix = unique_prefix()
    settings = ingest_settings(TEST_DATABASE_URL, "mqtt://127.0.0.1:1", prefix)
    fleet = seed_fleet(engine, batteries=3)
    first, poisoned, last = fleet.serials
    topic = station_topic(fleet.station_code, RecordKind.charging, prefix)

    def message(serial: str, slot: int, **extra: bool) -> bytes:
        return orjson.dumps(
            {"records": [charging(serial, 60.0 * i, slot=slot, **extra) for i in range(5)]}
        )

    # Job 0: the middle message is refused by PostgreSQL, so job 0 is split. Job 1 holds the
    # same records as job 0's last message (a redelivery): whichever job inserts them first,
    # the other finds them duplicates, but must never wait for them in PostgreSQL.
    now = time.time()
    job_0 = [
        (topic, message(first, 1), now),
        (topic, message(poisoned, 2, **{refusing_marker: True}), now),
        (topic, message(last, 3), now),
    ]
    job_1 = [(topic, message(last, 3), now + 1)]

    parent, child = multiprocessing.Pipe(duplex=True)
    stop = multiprocessing.Event()
    worker = threading.Thread(target=serve, args=(child, settings, stop), daemon=True)
    worker.start()
    assert parent.poll(30)
    assert parent.recv() == READY
    started = time.monotonic()
    parent.send(job_0)
    parent.send(job_1)
    outcomes: list[JobOutcome] = [parent.recv(), parent.recv()]
    elapsed = time.monotonic() - started
    parent.send(None)
    worker.join(20)
    assert not worker.is_alive()

    first_result, second_result = (o.result for o in outcomes)
    assert first_result is not None
    assert second_result is not None
    # The refused message is a dead letter; the two others of its job are stored by it...
    assert [d.reason for d in first_result.dead_letters] == ["store_error"]
    assert first_result.stored == {RecordKind.charging: 10}
    # ...before job 1, which finds its records stored.
    assert second_result.stored == {RecordKind.charging: 0}
    assert second_result.duplicates == {RecordKind.charging: 5}
    # No batch waited in PostgreSQL for another until a time-out rolled it back.
    assert [o.retries for o in outcomes] == [0, 0], f"{elapsed:.1f} s"
    with psycopg.connect(DB) as conn:
        (received,) = conn.execute(
            "SELECT array_agg(DISTINCT floor(extract(epoch FROM received_at))::int)"
            " FROM charging_samples WHERE battery_serial = %s",
            (last,),
        ).fetchone() or (None,)
    expected = [int(clock.from_timestamp(now).timestamp())]
    assert received == expected, "job 1 stored the records of job 0's last message"
