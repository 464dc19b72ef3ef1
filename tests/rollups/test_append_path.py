"""The append path (app/rollups/daily.py `append_select`), the statement the ingest runs
first for a batch of charging samples: for a batch that only appends to each battery's
history it writes exactly what the general statement (`incremental_select`) writes, and for
any other batch it writes nothing, so that the general statement runs instead."""

import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy.orm import Session

from app.ingest.aggregates import NEW_CHARGING_COLUMNS, NEW_CHARGING_TABLE
from app.ingest.partitions import create_partitions, month_start
from app.rollups.daily import append_select, incremental_select, upsert_statement
from app.rollups.rules import CHARGING
from tests.fixtures.report_data import GAP_S
from tests.ingest.test_ingest_set_based import INSERT, fleet_and_connection, wandering_samples

Connection = psycopg.Connection[Any]
Row = tuple[Any, ...]

APPEND = upsert_statement(CHARGING.written, append_select(CHARGING, NEW_CHARGING_TABLE))
GENERAL = upsert_statement(CHARGING.written, incremental_select(CHARGING, NEW_CHARGING_TABLE))
PARAMS = {"gap": GAP_S, "gap_interval": timedelta(seconds=GAP_S)}


def daily_rows(conn: Connection, serials: list[str]) -> list[Row]:
    return conn.execute(
        "SELECT * FROM battery_daily WHERE battery_serial = ANY(%s) ORDER BY 1, 2", (serials,)
    ).fetchall()


def after(conn: Connection, statement: str, serials: list[str]) -> tuple[int, list[Row]]:
    """What the statement upserts and battery_daily after it; then undone."""
    with conn.transaction(force_rollback=True):
        touched = conn.execute(statement, PARAMS).rowcount
        return touched, daily_rows(conn, serials)


def only_appends(stored: dict[str, list[datetime]], batch: list[Row]) -> bool:
    """The test's own reading of the rule: no stored row of a battery of the batch from its
    first new row to a session gap after its last."""
    new: dict[str, list[datetime]] = defaultdict(list)
    for row in batch:
        new[row[0]].append(row[1])
    gap = timedelta(seconds=GAP_S)
    return not any(
        min(ts) <= old <= max(ts) + gap for serial, ts in new.items() for old in stored[serial]
    )


def batches_of(rows: list[Row], rng: random.Random) -> list[list[Row]]:
    """In time order across the fleet as stations send, in uneven batches; then rows held
    back arrive late: alone, filling a hole between stored rows, just before stored rows
    (within a gap), and together with rows that do append."""
    in_order = sorted(rows, key=lambda r: (r[1], r[0]))
    held = set(rng.sample(range(len(in_order) // 2), 30))
    on_time = [r for i, r in enumerate(in_order) if i not in held]
    late = [in_order[i] for i in sorted(held)]
    batches, i = [], 0
    while i < len(on_time) * 3 // 4:
        n = rng.randint(5, 40)
        batches.append(on_time[i : i + n])
        i += n
    rest = on_time[i:]
    batches += [late[:1], late[1:10], rest[:20] + late[10:20], rest[20:], late[20:]]
    return [b for b in batches if b]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_append_path_writes_what_the_general_statement_writes_or_declines(
    session: Session, seed: int
) -> None:
    serials, stations, conn = fleet_and_connection(session, batteries=3)
    rng = random.Random(seed)
    rows = sorted({(r[0], r[1]): r for r in wandering_samples(serials, stations, rng)}.values())
    create_partitions(conn, "charging_samples", sorted({month_start(r[1]) for r in rows}))
    stored: dict[str, list[datetime]] = defaultdict(list)
    appended = declined = 0
    for batch in batches_of(rows, rng):
        for row in batch:
            conn.execute(
                f"WITH new AS ({INSERT} RETURNING {', '.join(NEW_CHARGING_COLUMNS)})"
                f" INSERT INTO {NEW_CHARGING_TABLE} SELECT * FROM new",
                row,
            )
        before = daily_rows(conn, serials)
        general_touched, general = after(conn, GENERAL, serials)
        append_touched, append = after(conn, APPEND, serials)
        assert general_touched > 0
        if only_appends(stored, batch):
            appended += 1
            assert append_touched == general_touched
            # Exactly: the same terms of the same rows, summed in the same order.
            assert append == general
        else:
            declined += 1
            assert append_touched == 0
            assert append == before
        conn.execute(GENERAL, PARAMS)
        conn.execute(f"DELETE FROM {NEW_CHARGING_TABLE}")
        for row in batch:
            stored[row[0]].append(row[1])
    assert appended > 5, "hardly any batch only appended: the append path was not tested"
    assert declined >= 3, "no late batch: the append path's refusal was not tested"
