"""The writer process's writers: while one batch's derived state and commit run, the next
batch is inserted on another connection, and the one after that checked and copied. The
outcome must be what one writer gives, and the answers must come back in the order the jobs
were sent (the parent acknowledges in order)."""

import multiprocessing
import random
import threading
import time
from datetime import datetime
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy import Engine

from app.core import clock
from app.ingest.aggregates import CHARGING_STATEMENTS, NEW_CHARGING_TABLE, STAGED_CHARGING_TABLE
from app.ingest.payloads import decode_message
from app.ingest.worker import READY, JobOutcome, serve
from app.ingest.writer import BatchWriter, libpq_url
from devices.contract import RecordKind, station_topic
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.ingest_harness import (
    Fleet,
    charging,
    ingest_settings,
    seed_fleet,
    unique_prefix,
)
from tests.ingest.test_ingest_set_based import per_row_python

DB = libpq_url(TEST_DATABASE_URL)
Job = list[tuple[str, bytes, float]]


def charging_histories(
    serials: list[str], rng: random.Random, start_s: float, samples: int
) -> list[dict[str, Any]]:
    """Charging records of each battery in its own slot, from start_s seconds from now (over
    a day ago, so they span midnight and none is in the future): gaps that split sessions,
    energy counters that restart, hot and normal cells."""
    records = []
    for slot, serial in enumerate(serials, start=1):
        offset, energy = start_s, 0.0
        for _ in range(samples):
            offset += rng.choice([30, 60, 60, 700, 5])
            energy = 0.0 if rng.random() < 0.05 else energy + rng.uniform(0.0, 0.8)
            records.append(
                charging(serial, offset, slot=slot, soc_pct=rng.uniform(5, 99),
                         energy_kwh=round(energy, 3), temp_c_max=rng.choice([31, 47]))
            )  # fmt: skip
    return records


def jobs_for(fleet: Fleet, prefix: str, seed: int) -> list[Job]:
    """Samples of every battery, some late, some twice, with gaps that split sessions, in
    jobs of distinct sizes (job k holds k + 1 messages), so answers out of order would show."""
    rng = random.Random(seed)
    records = charging_histories(fleet.serials, rng, start_s=-120_000.0, samples=150)
    records += rng.sample(records, len(records) // 5)
    # Mostly in order, as stations send, with a share of late arrivals.
    records.sort(key=lambda r: r["ts"])
    for _ in range(len(records) // 10):
        i, j = rng.randrange(len(records)), rng.randrange(len(records))
        records[i], records[j] = records[j], records[i]
    topic = station_topic(fleet.station_code, RecordKind.charging, prefix)
    messages = [
        (topic, orjson.dumps({"records": records[i : i + 7]}), time.time())
        for i in range(0, len(records), 7)
    ]
    jobs, k = [], 0
    while messages:
        jobs.append(messages[: k + 1])
        messages = messages[k + 1 :]
        k += 1
    return jobs


def derived_state(fleet: Fleet) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Sessions and daily rows with the fleet's serials replaced by their index, so two
    fleets given the same samples compare equal."""
    index = {serial: i for i, serial in enumerate(fleet.serials)}
    with psycopg.connect(DB) as conn:
        sessions = conn.execute(
            "SELECT battery_serial, slot, started_at, ended_at, soc_from_pct, soc_to_pct,"
            " energy_start_kwh, energy_end_kwh, peak_temp_c, sample_count"
            " FROM charging_sessions WHERE battery_serial = ANY(%s)",
            (fleet.serials,),
        ).fetchall()
        daily = conn.execute(
            "SELECT battery_serial, day, charging_samples, charging_sessions,"
            " round(energy_charged_kwh::numeric, 6), round(charged_ah::numeric, 6),"
            " seconds_above_45c, temp_max_c, last_seen_at"
            " FROM battery_daily WHERE battery_serial = ANY(%s)",
            (fleet.serials,),
        ).fetchall()
    return (
        sorted((index[r[0]], *r[1:]) for r in sessions),
        sorted((index[r[0]], *r[1:]) for r in daily),
    )


def shifted(jobs: list[Job], fleet_from: Fleet, fleet_to: Fleet, prefix: str) -> list[Job]:
    """The same jobs for another fleet: serials and station code replaced."""
    mapping = dict(zip(fleet_from.serials, fleet_to.serials, strict=True))
    out = []
    for job in jobs:
        new_job = []
        for _topic, payload, at in job:
            body = orjson.loads(payload)
            for record in body["records"]:
                record["battery_serial"] = mapping[record["battery_serial"]]
            new_job.append(
                (station_topic(fleet_to.station_code, RecordKind.charging, prefix),
                 orjson.dumps(body), at)
            )  # fmt: skip
        out.append(new_job)
    return out


def test_two_writers_give_what_one_writer_gives_and_answer_in_order(engine: Engine) -> None:
    prefix = unique_prefix()
    settings = ingest_settings(TEST_DATABASE_URL, "mqtt://127.0.0.1:1", prefix)
    one, two = seed_fleet(engine, batteries=4), seed_fleet(engine, batteries=4)
    jobs = jobs_for(one, prefix, seed=5)
    sent = sum(len(orjson.loads(p)["records"]) for job in jobs for _, p, _ in job)

    writer = BatchWriter(DB, settings)
    try:
        for job in jobs:
            now = clock.now()
            writer.write(
                [decode_message(t, p, settings=settings, received_at=now) for t, p, _ in job]
            )
    finally:
        writer.close()

    parent, child = multiprocessing.Pipe(duplex=True)
    stop = multiprocessing.Event()
    worker = threading.Thread(target=serve, args=(child, settings, stop), daemon=True)
    worker.start()
    assert parent.poll(30)
    assert parent.recv() == READY
    concurrent_jobs = shifted(jobs, one, two, prefix)
    for job in concurrent_jobs:
        parent.send(job)
    outcomes: list[JobOutcome] = [parent.recv() for _ in concurrent_jobs]
    parent.send(None)
    worker.join(20)
    assert not worker.is_alive()

    # A batch never waited out its turn (writer.TurnTimeout, counted as a retry): with the
    # same records in batches written at once, inserts out of job order let a batch wait in
    # PostgreSQL for a later one that waited for its commit.
    assert [o.retries for o in outcomes] == [0] * len(outcomes)
    expected_records = [sum(len(orjson.loads(p)["records"]) for _, p, _ in job) for job in jobs]
    assert [o.result.records if o.result else None for o in outcomes] == expected_records
    stored = sum(o.result.stored.get(RecordKind.charging, 0) for o in outcomes if o.result)
    assert stored < sent, "no duplicates were sent: nothing was tested"
    sessions, daily = derived_state(two)
    expected_sessions, expected_daily = derived_state(one)
    assert sum(s[-1] for s in sessions) == stored
    assert len(expected_sessions) > len(one.serials), "no session was split"
    assert sessions == expected_sessions
    assert daily == expected_daily


def test_the_writers_derived_state_equals_the_per_row_roll_up(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through each of the writer's ways with charging rows: all new and appended (read from
    the staging table, daily aggregates by the append path), all new but late (the same, the
    append path declines and the general statement runs), new and duplicate mixed (new rows
    captured in PostgreSQL), all duplicates."""
    prefix = unique_prefix()
    settings = ingest_settings(TEST_DATABASE_URL, "mqtt://127.0.0.1:1", prefix)
    reference, written = seed_fleet(engine, batteries=3), seed_fleet(engine, batteries=3)
    records = charging_histories(written.serials, random.Random(11), -150_000.0, samples=80)
    records.sort(key=lambda r: r["ts"])
    late, on_time = records[100:130], records[:100] + records[130:]
    batches = [on_time[i : i + 30] for i in range(0, len(on_time), 30)]
    batches.insert(5, late)
    batches.insert(3, batches[1])
    batches.insert(7, batches[6][:10] + on_time[-5:])
    batches.append(late[:3] + batches[-1])

    # Which daily statement ran, over which table of new rows, and what it upserted.
    statements = {
        statement: (new, path)
        for new, pair in CHARGING_STATEMENTS.items()
        for path, statement in pair._asdict().items()
    }
    daily_paths: list[tuple[str, str, int]] = []
    execute = psycopg.Connection.execute

    def spied(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        cursor = execute(self, query, *args, **kwargs)
        if isinstance(query, str) and query in statements:
            daily_paths.append((*statements[query], cursor.rowcount))
        return cursor

    monkeypatch.setattr(psycopg.Connection, "execute", spied)
    topic = station_topic(written.station_code, RecordKind.charging, prefix)
    writer = BatchWriter(DB, settings)
    ways = set()
    try:
        for batch in batches:
            payload = orjson.dumps({"records": batch})
            result = writer.write(
                [decode_message(topic, payload, settings=settings, received_at=clock.now())]
            )
            stored = result.stored.get(RecordKind.charging, 0)
            ways.add("new" if stored == len(batch) else "old" if stored == 0 else "mixed")
    finally:
        writer.close()

    mapping = dict(zip(written.serials, reference.serials, strict=True))
    with psycopg.connect(DB) as conn:
        (station_id,) = conn.execute(
            "SELECT id FROM stations WHERE code = %s", (reference.station_code,)
        ).fetchone() or (None,)
        for batch in batches:
            per_row_python(
                conn,
                [
                    (mapping[r["battery_serial"]], datetime.fromisoformat(r["ts"]), station_id,
                     r["slot"], r["soc_pct"], r["voltage_v"], r["current_a"], r["power_kw"],
                     r["temp_c_min"], r["temp_c_max"], r["energy_kwh"])
                    for r in batch
                ],
            )  # fmt: skip
            conn.commit()

    assert ways == {"new", "old", "mixed"}
    staged = [(path, n > 0) for new, path, n in daily_paths if new == STAGED_CHARGING_TABLE]
    assert ("append", True) in staged, "no batch took the append path: nothing was tested"
    assert ("append", False) in staged, "no late batch took the general path: nothing was tested"
    assert ("general", True) in staged
    assert any(new == NEW_CHARGING_TABLE for new, _, _ in daily_paths), "no mixed batch"
    sessions, daily = derived_state(written)
    expected_sessions, expected_daily = derived_state(reference)
    assert sum(s[-1] for s in sessions) == len(records)
    assert len(expected_sessions) > len(reference.serials), "no session was split"
    assert sessions == expected_sessions
    assert daily == expected_daily
