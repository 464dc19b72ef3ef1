"""The charging part of the daily aggregates, computed set-based in PostgreSQL.

Charging samples are most of the telemetry, and app/ingest/aggregates.py (`add_charging`)
reads every row of a batch's window back into Python to compute the consecutive-sample
terms. This is the same computation as one statement over the batch's new rows (a temporary
table the writer fills from INSERT ... RETURNING), with the same rules: `charging_terms` for
a new row against its predecessor, and for an old row right after a new one the difference
between its term against the new predecessor and against its old one. Sums, maxima and the
merge into battery_daily are aggregates.py's (`upsert_statement`); a test keeps the two in
agreement.
"""

from datetime import timedelta
from typing import Any

import psycopg

from app.ingest.aggregates import CHARGING_PAIR, COLD_C, HOT_C, upsert_statement

Connection = psycopg.Connection[Any]

# What the writer keeps of each newly inserted charging sample for the derived state.
NEW_CHARGING_COLUMNS = (
    "battery_serial",
    "ts",
    "station_id",
    "slot",
    "soc_pct",
    "current_a",
    "energy_kwh",
    "temp_c_min",
    "temp_c_max",
)
NEW_CHARGING_TABLE = "new_charging_samples"
NEW_CHARGING_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {NEW_CHARGING_TABLE} (battery_serial text, ts timestamptz,"
    " station_id int8, slot int4, soc_pct float8, current_a float8, energy_kwh float8,"
    " temp_c_min float8, temp_c_max float8) ON COMMIT DELETE ROWS"
)


def _terms(dt: str, continuous: str, energy: str) -> tuple[str, ...]:
    """charging_terms(prev, s) as SQL over the columns s_*, given the predecessor's time
    difference, whether it continues the charge and its energy, in CHARGING_PAIR order."""
    return (
        f"CASE WHEN {continuous} THEN 0.0::float8 ELSE 1.0::float8 END",
        f"CASE WHEN NOT {continuous} THEN s_energy WHEN s_energy >= {energy}"
        f" THEN s_energy - {energy} ELSE s_energy END",
        f"CASE WHEN {continuous} AND s_current > 0 THEN s_current * {dt} / 3600.0::float8"
        " ELSE 0.0::float8 END",
        f"CASE WHEN {continuous} AND s_tmax > {HOT_C!r} THEN {dt} ELSE 0.0::float8 END",
        f"CASE WHEN {continuous} AND s_tmin < {COLD_C!r} THEN {dt} ELSE 0.0::float8 END",
    )


_SAMPLE = (
    "battery_serial AS s_serial, ts AS s_ts, station_id AS s_station, slot AS s_slot,"
    " current_a AS s_current, energy_kwh AS s_energy, temp_c_min AS s_tmin, temp_c_max AS s_tmax"
)


def _statement() -> str:
    # p_*: the row before (new or old); o_*: the old row before, which an old row right after
    # a new one had as its predecessor until now.
    after = _terms("p_dt", "p_continuous", "p_energy")
    before = _terms("o_dt", "o_continuous", "o_energy")
    pair = ", ".join(
        f"sum(CASE WHEN s_new THEN {a} ELSE ({a}) - ({b}) END) AS {col}"
        for col, a, b in zip(CHARGING_PAIR, after, before, strict=True)
    )
    # Each row's time difference and continuity are computed once (extract() of an interval
    # is numeric arithmetic), and the old rows' own predecessors only among the old rows,
    # which are few: the nearest either side of each battery's new rows, and any late
    # record's neighbours.
    source = f"""
WITH bounds AS (
    SELECT battery_serial, min(ts) AS first, max(ts) AS last
    FROM {NEW_CHARGING_TABLE} GROUP BY battery_serial ORDER BY battery_serial
), win AS MATERIALIZED (
    -- add_charging's window is a session gap either side of the new rows, but only the rows
    -- between the first and the last new row, and the nearest row either side, have or are
    -- the neighbours of a changed term. In time order per battery, so sorts find it sorted.
    SELECT c.*, n.ts IS NOT NULL AS s_new
    FROM bounds b
    CROSS JOIN LATERAL (
        -- max()/min() rather than ORDER BY ... LIMIT 1: per partition, one index probe; the
        -- planner sorts the whole gap's rows for the latter.
        SELECT {_SAMPLE} FROM charging_samples
        WHERE battery_serial = b.battery_serial AND ts = (
            SELECT max(ts) FROM charging_samples WHERE battery_serial = b.battery_serial
                AND ts < b.first AND ts >= b.first - %(gap_interval)s)
        UNION ALL
        (SELECT {_SAMPLE} FROM charging_samples
         WHERE battery_serial = b.battery_serial AND ts >= b.first AND ts <= b.last)
        UNION ALL
        SELECT {_SAMPLE} FROM charging_samples
        WHERE battery_serial = b.battery_serial AND ts = (
            SELECT min(ts) FROM charging_samples WHERE battery_serial = b.battery_serial
                AND ts > b.last AND ts <= b.last + %(gap_interval)s)
    ) c
    LEFT JOIN {NEW_CHARGING_TABLE} n ON n.battery_serial = c.s_serial AND n.ts = c.s_ts
), paired AS (
    SELECT s.*, extract(epoch FROM s_ts - p_ts)::float8 AS p_dt
    FROM (
        SELECT win.*,
            lag(s_ts) OVER w AS p_ts, lag(s_station) OVER w AS p_station,
            lag(s_slot) OVER w AS p_slot, lag(s_energy) OVER w AS p_energy,
            coalesce(lag(s_new) OVER w, false) AS p_new
        FROM win WINDOW w AS (PARTITION BY s_serial ORDER BY s_ts)
    ) s
    WHERE s_new OR p_new
), olds AS (
    SELECT s.*, extract(epoch FROM o_at - o_ts)::float8 AS o_dt
    FROM (
        SELECT s_serial AS o_serial, s_ts AS o_at, lag(s_ts) OVER w AS o_ts,
            lag(s_station) OVER w AS o_station, lag(s_slot) OVER w AS o_slot,
            lag(s_energy) OVER w AS o_energy, s_station AS o_s_station, s_slot AS o_s_slot
        FROM win WHERE NOT s_new WINDOW w AS (PARTITION BY s_serial ORDER BY s_ts)
    ) s
), terms AS (
    SELECT paired.*, olds.*,
        coalesce(p_ts IS NOT NULL AND p_station = s_station AND p_slot = s_slot
            AND p_dt < %(gap)s::float8, false) AS p_continuous,
        coalesce(o_ts IS NOT NULL AND o_station = o_s_station AND o_slot = o_s_slot
            AND o_dt < %(gap)s::float8, false) AS o_continuous
    FROM paired
    LEFT JOIN olds ON NOT s_new AND o_serial = s_serial AND o_at = s_ts
)
SELECT s_serial, (s_ts AT TIME ZONE 'UTC')::date AS day, {pair},
    count(*) FILTER (WHERE s_new) AS charging_samples,
    coalesce(sum(s_tmax - s_tmin) FILTER (WHERE s_new), 0.0) AS temp_spread_sum_c,
    max(s_tmax) FILTER (WHERE s_new) AS temp_max_c,
    max(s_ts) FILTER (WHERE s_new) AS last_seen_at
FROM terms
GROUP BY 1, 2
ORDER BY 1, 2"""
    columns = (*CHARGING_PAIR, "charging_samples", "temp_spread_sum_c", "temp_max_c")
    return upsert_statement((*columns, "last_seen_at"), source)


_STATEMENT = _statement()


def add_new_charging(conn: Connection, gap_s: float) -> int:
    """Adds the batch's new charging samples (in NEW_CHARGING_TABLE) to battery_daily;
    returns the battery-days touched."""
    cur = conn.execute(
        _STATEMENT, {"gap": gap_s, "gap_interval": timedelta(seconds=gap_s)}, prepare=True
    )
    return cur.rowcount
