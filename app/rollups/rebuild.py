"""Recomputing battery_daily and oem_swap_daily from the raw tables, for backfill and repair.

The rules and the SQL are those the ingest (app/rollups/daily.py, the same rules as SELECTs
over a window of days instead of a batch's new rows) and the swap roll-up
(app/rollups/swaps.py) run.

A rebuild locks both tables against writers (SHARE ROW EXCLUSIVE) for its transaction: an
ingest batch that has not reached its aggregate step yet waits and adds its rows afterwards,
and one that has already added them finished before the lock was granted, so nothing is lost
or counted twice while the ingest keeps running.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.rollups.daily import rebuild_select, upsert_statement
from app.rollups.monthly import recompute_months
from app.rollups.rules import CYCLES_LOOKBACK, FIT_EPOCH, TELEMETRY
from app.rollups.swaps import (
    BATTERY_SWAPS,
    OEM_SWAP_ROWS,
    OEM_SWAPS_UPSERT,
    SWAP_COLUMNS,
    WINDOW_SWAPS,
    roll_up_swaps,
)

log = logging.getLogger(__name__)


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
    roll_up_swaps(conn, wait=True, tables_locked=True)
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
