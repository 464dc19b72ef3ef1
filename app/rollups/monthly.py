"""battery_monthly from battery_daily, generated from rules.MONTHLY.

The triggers of migrations d5e9f3a2b8c4 and e7a1c4d2f9b6 keep battery_monthly in step with
every write to battery_daily, from a frozen copy of these rules (migrations are history);
tests/reports/test_report_aggregates.py checks that trigger-kept and recomputed rows agree, and
tests/rollups/test_rollup_rules.py that the rules cover the tables' columns.
"""

from datetime import date
from typing import Any

from sqlalchemy import Connection

from app.rollups.rules import MONTHLY, MONTHLY_BY_NAME, Merge

COLUMNS = tuple(c.name for c in MONTHLY)
# The columns a window of days sums, whole months from battery_monthly and edge days from
# battery_daily (see per_day).
SUMMED = tuple(c.name for c in MONTHLY if c.merge is Merge.SUM)

_MERGE = {
    Merge.SUM: "battery_monthly.{c} + EXCLUDED.{c}",
    Merge.MAX: "GREATEST(battery_monthly.{c}, EXCLUDED.{c})",
    Merge.MIN: "LEAST(battery_monthly.{c}, EXCLUDED.{c})",
}


def per_day(column: str, d: str = "d") -> str:
    """What one battery_daily row `d` contributes to a monthly column."""
    return MONTHLY_BY_NAME[column].of(d)


def _upsert(select: str) -> str:
    merge = ", ".join(f"{c.name} = {_MERGE[c.merge].format(c=c.name)}" for c in MONTHLY)
    return (
        f"INSERT INTO battery_monthly (battery_serial, month, {', '.join(COLUMNS)}) {select}"
        f" ON CONFLICT (battery_serial, month) DO UPDATE SET {merge}"
    )


def rollup_select(source: str, where: str = "") -> str:
    """battery_monthly rows aggregated from battery_daily rows `d` of `source`."""
    aggregates = ", ".join(f"{c.merge.value}({c.of('d')})" for c in MONTHLY)
    return (
        f"SELECT d.battery_serial, date_trunc('month', d.day)::date, {aggregates}"
        f" FROM {source} d {where} GROUP BY 1, 2"
    )


def month_start(day: date) -> date:
    return day.replace(day=1)


def recompute_months(
    conn: Connection, day_from: date, day_to: date, serials: list[str] | None = None
) -> int:
    """Replaces the battery_monthly rows of every month touching day_from..day_to (of the
    given batteries) with sums of their battery_daily rows; returns the rows written."""
    params: dict[str, Any] = {
        "m_from": month_start(day_from),
        "m_to": month_start(day_to),
        "serials": serials,
    }
    only = "AND battery_serial = ANY(%(serials)s)" if serials is not None else ""
    conn.exec_driver_sql(
        f"DELETE FROM battery_monthly WHERE month BETWEEN %(m_from)s AND %(m_to)s {only}",
        params,
    )
    where = "WHERE d.day >= %(m_from)s AND d.day < (%(m_to)s::date + INTERVAL '1 month')" + (
        " AND d.battery_serial = ANY(%(serials)s)" if serials is not None else ""
    )
    return conn.exec_driver_sql(_upsert(rollup_select("battery_daily", where)), params).rowcount
