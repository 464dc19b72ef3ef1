"""battery_monthly from battery_daily: the recompute used by rebuild_aggregates."""

from datetime import date
from typing import Any

from sqlalchemy import Connection

# The same rules as the triggers of migration d5e9f3a2b8c4, which keep a frozen copy;
# tests/reports/test_report_aggregates.py checks that trigger-kept and recomputed rows agree.
INT_SUMS = (
    "charging_samples", "charging_sessions", "capacity_records", "fit_cycles_n",
    "swaps_in", "swaps_out", "health_rejections", "health_records",
)  # fmt: skip
FLOAT_SUMS = (
    "energy_charged_kwh", "charged_ah", "temp_spread_sum_c", "energy_discharged_kwh",
    "discharged_ah", "seconds_above_45c", "seconds_below_0c", "capacity_sum_ah",
    "fit_days_sx", "fit_days_sxx", "fit_days_sxy", "fit_cycles_sx", "fit_cycles_sy",
    "fit_cycles_sxx", "fit_cycles_sxy",
)  # fmt: skip
# Least-squares sums of cell_imbalance_max_mv over x = day - 2020-01-01, days with a value.
IMB_X = "(d.day - DATE '2020-01-01')::float8"
IMB_TERMS = {
    "imbalance_n": "CASE WHEN d.cell_imbalance_max_mv IS NULL THEN 0 ELSE 1 END",
    "imbalance_sx": f"CASE WHEN d.cell_imbalance_max_mv IS NULL THEN 0 ELSE {IMB_X} END",
    "imbalance_sy": "COALESCE(d.cell_imbalance_max_mv, 0)",
    "imbalance_sxx": f"CASE WHEN d.cell_imbalance_max_mv IS NULL THEN 0 ELSE {IMB_X}^2 END",
    "imbalance_sxy": f"COALESCE(d.cell_imbalance_max_mv * {IMB_X}, 0)",
}
ADDED = ("days", *INT_SUMS, *FLOAT_SUMS, *IMB_TERMS)
COLUMNS = (*ADDED, "temp_max_c", "last_seen_at", "first_day")


def _merge() -> str:
    parts = [f"{c} = battery_monthly.{c} + EXCLUDED.{c}" for c in ADDED]
    parts += [
        "temp_max_c = GREATEST(battery_monthly.temp_max_c, EXCLUDED.temp_max_c)",
        "last_seen_at = GREATEST(battery_monthly.last_seen_at, EXCLUDED.last_seen_at)",
        "first_day = LEAST(battery_monthly.first_day, EXCLUDED.first_day)",
    ]
    return ", ".join(parts)


def _upsert(select: str) -> str:
    return (
        f"INSERT INTO battery_monthly (battery_serial, month, {', '.join(COLUMNS)}) {select}"
        f" ON CONFLICT (battery_serial, month) DO UPDATE SET {_merge()}"
    )


def _sums(prefix: str) -> list[str]:
    terms = {c: f"{prefix}.{c}" for c in (*INT_SUMS, *FLOAT_SUMS)}
    terms |= {k: v.replace("d.", f"{prefix}.") for k, v in IMB_TERMS.items()}
    return [f"{c}: {t}" for c, t in terms.items()]


def rollup_select(source: str, where: str = "") -> str:
    """battery_monthly rows summed from battery_daily rows `d` of `source`."""
    sums = [f"sum({t.split(': ', 1)[1]})" for t in _sums("d")]
    return (
        "SELECT d.battery_serial, date_trunc('month', d.day)::date, count(*), "
        + ", ".join(sums)
        + ", max(d.temp_max_c), max(d.last_seen_at), min(d.day)"
        + f" FROM {source} d {where} GROUP BY 1, 2"
    )


def delta_select() -> str:
    """What an UPDATE of battery_daily rows added: new minus old, joined on the key."""
    new = [t.split(": ", 1)[1] for t in _sums("n")]
    old = [t.split(": ", 1)[1] for t in _sums("o")]
    diffs = [f"sum(({a}) - ({b}))" for a, b in zip(new, old, strict=True)]
    return (
        "SELECT n.battery_serial, date_trunc('month', n.day)::date, 0, "
        + ", ".join(diffs)
        + ", max(n.temp_max_c), max(n.last_seen_at), min(n.day)"
        + " FROM daily_new n JOIN daily_old o USING (battery_serial, day) GROUP BY 1, 2"
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
