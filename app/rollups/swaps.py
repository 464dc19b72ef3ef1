"""The swap roll-up: swaps queue themselves (swap_rollup_queue) and roll_up_swaps adds what
committed to oem_swap_daily and battery_daily's swap columns in batches, after their commit
(migration f3c9a7d1e5b2); a rebuild recomputes the same rows from swap_events with the same
rules (app/rollups/rebuild.py)."""

from sqlalchemy import Connection

from app.rollups.daily import upsert_statement

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


def roll_up_swaps(conn: Connection, *, wait: bool = False, tables_locked: bool = False) -> int:
    """Adds the queued swaps to oem_swap_daily and battery_daily (and, by its triggers,
    battery_monthly) and takes them off the queue, in the caller's transaction, so that a
    reader sees each swap either queued or added, never both. Returns the swaps added; 0
    without waiting when another roll-up holds the lock, unless `wait`. `tables_locked`: the
    caller holds battery_daily and swap_rollup_queue locked against every other writer (a
    rebuild), so no battery row locks are taken (an ingest batch or a swap holding one would
    wait for those tables while this waited for it)."""
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
    battery_rows = BATTERY_SWAPS.format(swaps=TAKEN_SWAPS, serials_swaps="true")
    # The batteries first, in serial order, as the ingest locks a batch's (app/ingest/writer.py
    # lock_batteries): FOR SHARE waits for a batch holding one of them to commit, and a batch
    # waits for this. Key order alone did not do: a batch writes battery_daily one statement
    # per record kind, each in key order but not all of them together, so a batch holding a
    # later row and wanting an earlier one formed a cycle with a roll-up holding the earlier.
    if not tables_locked:
        conn.exec_driver_sql(
            f"SELECT 1 FROM batteries WHERE serial IN (SELECT serial FROM ({battery_rows}) s)"
            " ORDER BY serial FOR SHARE",
            params,
        )
    conn.exec_driver_sql(upsert_statement(SWAP_COLUMNS, battery_rows + " ORDER BY 1, 2"), params)
    return len(ids)
