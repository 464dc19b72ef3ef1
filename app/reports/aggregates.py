"""Recomputing battery_daily and oem_swap_daily from the raw tables, for backfill and repair.

The telemetry's rules and SQL are app/rollups' (the same SELECTs the ingest runs over a
batch's new rows, here over a window of days); the swaps' are the roll-up's below.

A rebuild locks both tables against writers (SHARE ROW EXCLUSIVE) for its transaction: an
ingest batch that has not reached its aggregate step yet waits and adds its rows afterwards,
and one that has already added them finished before the lock was granted, so nothing is lost
or counted twice while the ingest keeps running.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from app.rollups.daily import TELEMETRY, rebuild_select, upsert_statement
from app.rollups.monthly import recompute_months
from app.rollups.rules import CYCLES_LOOKBACK, FIT_EPOCH

log = logging.getLogger(__name__)

# The swap rules, over the swaps `s` of {swaps}: a window of swap_events for a rebuild, the
# queued swaps for the roll-up (roll_up_swaps). Until migration f3c9a7d1e5b2 the trigger of
# migration c4d8e2f1a7b3 applied them inside each swap's transaction.
BATTERY_SWAPS = """
SELECT serial, day, sum(swaps_in), sum(swaps_out), sum(rejections)
FROM (
    SELECT b.serial, (s.started_at AT TIME ZONE 'UTC')::date AS day,
        1 AS swaps_in, 0 AS swaps_out, 0 AS rejections
    FROM {swaps} s JOIN batteries b ON b.id = s.installed_battery_id
    WHERE s.outcome = 'completed'
    UNION ALL
    SELECT b.serial, (s.started_at AT TIME ZONE 'UTC')::date, 0, 1, 0
    FROM {swaps} s JOIN batteries b ON b.id = s.removed_battery_id
    WHERE s.outcome = 'completed'
    UNION ALL
    SELECT b.serial, (s.started_at AT TIME ZONE 'UTC')::date, 0, 0, 1
    FROM {swaps} s JOIN batteries b ON b.serial = s.installed_battery_serial
    WHERE s.outcome <> 'completed' AND s.reason_code IN ('BatteryDamaged', 'BatterySoHLow')
) swaps
WHERE {serials_swaps}
GROUP BY serial, day
"""
SWAP_COLUMNS = ("swaps_in", "swaps_out", "health_rejections")

# Swap attempts per OEM (the vehicle's, else the removed battery's, else 0), day, outcome and
# reason, over the swaps `s` of {swaps}.
OEM_SWAP_ROWS = """
SELECT COALESCE(v.oem_id, b.oem_id, 0) AS oem_id, (s.started_at AT TIME ZONE 'UTC')::date AS day,
    s.outcome::text AS outcome, COALESCE(s.reason_code, '') AS reason_code, count(*) AS swaps
FROM {swaps} s
LEFT JOIN vehicles v ON v.vin = s.vin
LEFT JOIN batteries b ON b.serial = s.removed_battery_serial
GROUP BY 1, 2, 3, 4
"""
OEM_SWAPS_UPSERT = (
    "INSERT INTO oem_swap_daily (oem_id, day, outcome, reason_code, swaps) {rows}"
    " ON CONFLICT (oem_id, day, outcome, reason_code)"
    " DO UPDATE SET swaps = oem_swap_daily.swaps + EXCLUDED.swaps"
)
WINDOW_SWAPS = "(SELECT * FROM swap_events WHERE started_at >= %(lo)s AND started_at < %(hi)s)"
TAKEN_SWAPS = "(SELECT * FROM swap_events WHERE id = ANY(%(ids)s))"
# Swaps committed and still queued, for readers that add them to the rolled-up counts. One
# primary-key probe per queued swap: OFFSET 0 keeps the planner from pushing a reader's day
# filter into swap_events and hashing all of it (measured 300 ms for 2,000 queued swaps
# among 300,000, against a few ms).
QUEUED_SWAPS = (
    "(SELECT e.* FROM swap_rollup_queue q CROSS JOIN LATERAL"
    " (SELECT * FROM swap_events WHERE id = q.swap_id OFFSET 0) e)"
)
# One roll-up at a time across every process (a transaction-scoped advisory lock): two would
# wait on each other's rows; the key is arbitrary and used for nothing else.
ROLLUP_LOCK_KEY = 0x5F_A9_12


def roll_up_swaps(conn: Connection, *, wait: bool = False) -> int:
    """Adds the queued swaps to oem_swap_daily and battery_daily (and, by its triggers,
    battery_monthly) and takes them off the queue, in the caller's transaction, so that a
    reader sees each swap either queued or added, never both. Returns the swaps added; 0
    without waiting when another roll-up holds the lock, unless `wait`."""
    if wait:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": ROLLUP_LOCK_KEY})
    elif not conn.exec_driver_sql(
        "SELECT pg_try_advisory_xact_lock(%(key)s)", {"key": ROLLUP_LOCK_KEY}
    ).scalar():
        return 0
    # Rows of swaps not yet committed are not visible here: they stay for the next roll-up.
    ids = list(conn.exec_driver_sql("DELETE FROM swap_rollup_queue RETURNING swap_id").scalars())
    if not ids:
        return 0
    params = {"ids": ids}
    conn.exec_driver_sql(
        OEM_SWAPS_UPSERT.format(rows=OEM_SWAP_ROWS.format(swaps=TAKEN_SWAPS)), params
    )
    # In key order, as the ingest writes battery_daily, so that the two cannot deadlock.
    battery_rows = BATTERY_SWAPS.format(swaps=TAKEN_SWAPS, serials_swaps="true")
    conn.exec_driver_sql(upsert_statement(SWAP_COLUMNS, battery_rows + " ORDER BY 1, 2"), params)
    return len(ids)


@dataclass(frozen=True)
class RebuildResult:
    day_from: date
    day_to: date
    battery_days: int
    oem_swap_days: int


# Migration d5e9f3a2b8c4: they keep battery_monthly in step with battery_daily.
MONTHLY_TRIGGERS = ("battery_daily_monthly_insert", "battery_daily_monthly_update")


def _instant(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def rebuild_aggregates(
    session: Session,
    day_from: date,
    day_to: date,
    *,
    session_gap_s: float,
    serials: list[str] | None = None,
) -> RebuildResult:
    """Replaces battery_daily (and, for a whole-fleet rebuild, oem_swap_daily) for the UTC
    days day_from..day_to inclusive with figures recomputed from the raw tables. With
    `serials`, only those batteries' rows are rebuilt."""
    if day_from > day_to:
        raise ValueError("day_from is after day_to")
    conn = session.connection()
    # The queue too: a swap committing during the rebuild could otherwise be both recomputed
    # from swap_events and rolled up from the queue. Swaps wait for the rebuild (they did
    # before the queue as well, when they added to these tables themselves).
    conn.exec_driver_sql(
        "LOCK TABLE battery_daily, oem_swap_daily, swap_rollup_queue IN SHARE ROW EXCLUSIVE MODE"
    )
    # What is queued goes in first; the rebuilt days are then recomputed from swap_events.
    roll_up_swaps(conn, wait=True)
    # The monthly roll-up's triggers would only add the rebuilt days on top of what the deleted
    # days had put there, for recompute_months to replace: wasted work over millions of rows.
    # (Before migration e7a1c4d2f9b6 they also kept a plan made for their first, small firing,
    # quadratic in the rows of a whole-fleet upsert: it never finished on 1.8 M rows.)
    # Disabled inside this transaction only: nobody else ever sees them off, and the lock
    # above is the one ALTER TABLE ... DISABLE TRIGGER takes.
    for trigger in MONTHLY_TRIGGERS:
        conn.exec_driver_sql(f"ALTER TABLE battery_daily DISABLE TRIGGER {trigger}")
    lo, hi = _instant(day_from), _instant(day_to + timedelta(days=1))
    params: dict[str, Any] = {
        "lo": lo,
        "hi": hi,
        "lo_gap": lo - timedelta(seconds=session_gap_s),
        "gap": session_gap_s,
        "epoch": FIT_EPOCH,
        "lookback": CYCLES_LOOKBACK,
        "day_from": day_from,
        "day_to": day_to,
        "serials": serials,
    }
    only = "AND battery_serial = ANY(%(serials)s)" if serials is not None else ""
    conn.exec_driver_sql(
        f"DELETE FROM battery_daily WHERE day BETWEEN %(day_from)s AND %(day_to)s {only}",
        params,
    )
    only_t = "AND t.battery_serial = ANY(%(serials)s)" if serials is not None else ""
    for telemetry in TELEMETRY:
        conn.exec_driver_sql(
            upsert_statement(telemetry.written, rebuild_select(telemetry, only_t)), params
        )
    swaps = BATTERY_SWAPS.format(
        swaps=WINDOW_SWAPS,
        serials_swaps="serial = ANY(%(serials)s)" if serials is not None else "true",
    )
    conn.exec_driver_sql(upsert_statement(SWAP_COLUMNS, swaps), params)
    battery_days = conn.exec_driver_sql(
        f"SELECT count(*) FROM battery_daily WHERE day BETWEEN %(day_from)s AND %(day_to)s {only}",
        params,
    ).scalar_one()
    # The triggers are off (above): recompute the touched months of battery_monthly.
    recompute_months(conn, day_from, day_to, serials)
    for trigger in MONTHLY_TRIGGERS:
        conn.exec_driver_sql(f"ALTER TABLE battery_daily ENABLE TRIGGER {trigger}")
    oem_swap_days = 0
    if serials is None:
        conn.exec_driver_sql(
            "DELETE FROM oem_swap_daily WHERE day BETWEEN %(day_from)s AND %(day_to)s", params
        )
        oem_swap_days = conn.exec_driver_sql(
            OEM_SWAPS_UPSERT.format(rows=OEM_SWAP_ROWS.format(swaps=WINDOW_SWAPS)), params
        ).rowcount
    log.info(
        "event=aggregates_rebuilt from=%s to=%s battery_days=%d oem_swap_days=%d",
        day_from,
        day_to,
        battery_days,
        oem_swap_days,
    )
    return RebuildResult(day_from, day_to, int(battery_days), oem_swap_days)
