"""Nothing lost, nothing twice: the ingest (a subprocess) against a private Mosquitto it can
lose, killed with SIGKILL, and a private PostgreSQL that goes away for a while."""

import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator

import orjson
import pytest
from app.core.config import normalize_database_url
from app.core.migrate import upgrade
from sqlalchemy import Engine, create_engine

from app.ingest.client import libpq_url
from devices.contract import RecordKind, station_topic
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.ingest_harness import (
    Fleet,
    PrivateBroker,
    PrivatePostgres,
    Publisher,
    charging,
    count,
    seed_fleet,
    spawn_ingest,
    unique_prefix,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

# Far beyond Mosquitto's default max_queued_messages (1000), which would silently drop.
TOTAL = 6000


@pytest.fixture
def broker() -> Iterator[PrivateBroker]:
    server = PrivateBroker()
    server.start()
    yield server
    server.cleanup()


def messages(fleet: Fleet, prefix: str, start: int, stop: int) -> list[tuple[str, bytes]]:
    topic = station_topic(fleet.station_code, RecordKind.charging, prefix)
    out = []
    for i in range(start, stop):
        battery = i % len(fleet.serials)
        serial = fleet.serials[battery]
        record = charging(serial, i // len(fleet.serials) * 0.5, slot=battery + 1)
        out.append((topic, orjson.dumps(record)))
    return out


def stored(db: str, fleet: Fleet) -> int:
    return count(
        db, "SELECT count(*) FROM charging_samples WHERE battery_serial = ANY(%s)", (fleet.serials,)
    )


def assert_exactly_once(db: str, fleet: Fleet, expected: int) -> None:
    assert wait_for(lambda: stored(db, fleet) >= expected, timeout=40), (
        f"{stored(db, fleet)} of {expected} records stored"
    )
    assert stored(db, fleet) == expected
    # Derived state counts every record once too: redeliveries must not inflate sessions.
    sessions = count(
        db,
        "SELECT coalesce(sum(sample_count), 0) FROM charging_sessions"
        " WHERE battery_serial = ANY(%s)",
        (fleet.serials,),
    )
    assert sessions == expected


def warm_up(publisher: Publisher, db: str, fleet: Fleet, prefix: str) -> None:
    """Publishes the first record until it is stored: until the ingest has subscribed once,
    the broker has no session to queue for it."""
    first = messages(fleet, prefix, 0, 1)
    for _ in range(60):
        publisher.publish_many(first)
        if wait_for(lambda: stored(db, fleet) == 1, timeout=0.5):
            return
    raise AssertionError("the ingest never stored a record")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(
    engine: Engine, broker: PrivateBroker
) -> None:
    fleet, prefix, db = seed_fleet(engine), unique_prefix(), libpq_url(TEST_DATABASE_URL)
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    ingest = spawn_ingest(TEST_DATABASE_URL, broker.url, prefix, client_id)
    publisher = Publisher(broker.port)
    try:
        warm_up(publisher, db, fleet, prefix)
        feeder = threading.Thread(
            target=publisher.publish_many, args=(messages(fleet, prefix, 1, TOTAL),)
        )
        feeder.start()
        assert wait_for(lambda: stored(db, fleet) > 300, interval=0.01)
        ingest.kill()
        ingest.wait()
        at_kill = stored(db, fleet)
        feeder.join()
        assert at_kill < TOTAL, "the kill came after the stream ended; nothing was tested"
        ingest = spawn_ingest(TEST_DATABASE_URL, broker.url, prefix, client_id)
        assert_exactly_once(db, fleet, TOTAL)
    finally:
        publisher.close()
        stop_process(ingest)


def test_broker_restarts_lose_nothing_and_double_nothing(
    engine: Engine, broker: PrivateBroker
) -> None:
    fleet, prefix, db = seed_fleet(engine), unique_prefix(), libpq_url(TEST_DATABASE_URL)
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    ingest = spawn_ingest(TEST_DATABASE_URL, broker.url, prefix, client_id)
    publisher = Publisher(broker.port)
    try:
        warm_up(publisher, db, fleet, prefix)
        # The ingest goes away: its persistent session queues the backlog in the broker...
        stop_process(ingest)
        publisher.publish_many(messages(fleet, prefix, 1, 4000))
        publisher.close()
        # ...which must survive a broker restart...
        broker.stop()
        broker.start()
        # Small batches, so that the drain takes many commits and the restart below lands
        # in the middle of it however fast the writer is.
        ingest = spawn_ingest(
            TEST_DATABASE_URL,
            broker.url,
            prefix,
            client_id,
            SWAPFLEET_INGEST_BATCH_MAX_RECORDS="50",
            SWAPFLEET_INGEST_BATCH_WINDOW_S="0.05",
        )
        assert wait_for(lambda: stored(db, fleet) > 1, interval=0.01)
        # ...and another one while the ingest is draining it.
        broker.stop()
        mid_drain = stored(db, fleet)
        broker.start()
        assert mid_drain < 4000, "the restart came after the drain; nothing was tested"
        publisher = Publisher(broker.port)
        publisher.publish_many(messages(fleet, prefix, 4000, TOTAL))
        assert_exactly_once(db, fleet, TOTAL)
    finally:
        publisher.close()
        stop_process(ingest)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    yield server
    server.cleanup()


def test_database_outage_and_a_crash_during_it_lose_nothing_and_the_backlog_drains(
    broker: PrivateBroker, private_postgres: PrivatePostgres
) -> None:
    url = private_postgres.url
    upgrade(url)
    private_engine = create_engine(normalize_database_url(url))
    fleet = seed_fleet(private_engine)
    private_engine.dispose()
    prefix, client_id = unique_prefix(), f"ingest-{uuid.uuid4().hex[:8]}"
    ingest = spawn_ingest(url, broker.url, prefix, client_id, SWAPFLEET_INGEST_RETRY_MAX_S="1")
    publisher = Publisher(broker.port)
    try:
        warm_up(publisher, url, fleet, prefix)
        publisher.publish_many(messages(fleet, prefix, 1, 1000))
        assert wait_for(lambda: stored(url, fleet) == 1000)
        private_postgres.stop()
        publisher.publish_many(messages(fleet, prefix, 1000, TOTAL))
        # Long enough for the writer to fail, back off and retry several times.
        assert not wait_for(lambda: ingest.poll() is not None, timeout=4)
        # A crash while the database is away: whatever the writer held must still be with
        # the broker, i.e. never acknowledged before its commit.
        ingest.kill()
        ingest.wait()
        ingest = spawn_ingest(url, broker.url, prefix, client_id, SWAPFLEET_INGEST_RETRY_MAX_S="1")
        assert not wait_for(lambda: ingest.poll() is not None, timeout=2)
        private_postgres.start()
        assert_exactly_once(url, fleet, TOTAL)
    finally:
        publisher.close()
        stop_process(ingest)
