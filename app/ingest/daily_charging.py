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

from datetime import UTC, date, datetime, timedelta
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


# Per battery of a batch whose every charging row was new: how many stored rows lie between
# its first and last new row (all of them new, when the batch only appends), its predecessor
# within a session gap, and whether a stored row follows within a gap.
_NEIGHBOURS = """
SELECT w.serial,
    (SELECT count(*) FROM charging_samples c
     WHERE c.battery_serial = w.serial AND c.ts >= w.first AND c.ts <= w.last) AS in_span,
    p.ts, p.station_id, p.slot, p.energy_kwh,
    EXISTS (SELECT 1 FROM charging_samples c
            WHERE c.battery_serial = w.serial AND c.ts > w.last AND c.ts <= w.last + %(gap)s)
FROM unnest(%(serials)s::text[], %(firsts)s::timestamptz[], %(lasts)s::timestamptz[])
    AS w(serial, first, last)
LEFT JOIN charging_samples p ON p.battery_serial = w.serial AND p.ts = (
    SELECT max(ts) FROM charging_samples c
    WHERE c.battery_serial = w.serial AND c.ts < w.first AND c.ts >= w.first - %(gap)s)
"""

ONE_DAY = timedelta(days=1)

_APPENDED_COLUMNS = (
    *CHARGING_PAIR,
    "charging_samples",
    "temp_spread_sum_c",
    "temp_max_c",
    "last_seen_at",
)
_APPENDED_UPSERT = upsert_statement(
    _APPENDED_COLUMNS,
    "SELECT * FROM unnest(%s::text[], %s::date[], %s::float8[], %s::float8[], %s::float8[],"
    " %s::float8[], %s::float8[], %s::int4[], %s::float8[], %s::float8[], %s::timestamptz[])",
)


def add_appended_charging(conn: Connection, rows: list[list[Any]], gap_s: float) -> bool:
    """add_new_charging computed in Python from the writer's rows (writer.SPECS order,
    sorted by serial and ts, every one new) when the batch only appends to each battery's
    history: no stored row between a battery's first and last new row, none within a gap
    after. Then each new row's term needs only the row before it, and no old row's term
    changes. Returns False, having written nothing, for any other batch.

    The same sums as the SQL statement (charging_terms, in the same order per battery-day),
    from rows already in memory instead of read back, joined and windowed in PostgreSQL."""
    if not rows:
        return True
    bounds: dict[str, list[Any]] = {}
    serial = None
    for row in rows:
        if row[0] != serial:
            serial = row[0]
            span = bounds[serial] = [row[1], row[1], 0]
        span[1] = row[1]
        span[2] += 1
    serials = list(bounds)
    gap = timedelta(seconds=gap_s)
    previous: dict[str, tuple[Any, ...]] = {}
    for serial, in_span, ts, station_id, slot, energy, followed in conn.execute(
        _NEIGHBOURS,
        {
            "serials": serials,
            "firsts": [bounds[s][0] for s in serials],
            "lasts": [bounds[s][1] for s in serials],
            "gap": gap,
        },
        prepare=True,
    ):
        if followed or in_span != bounds[serial][2]:
            return False
        if ts is not None:
            previous[serial] = (ts.astimezone(UTC), station_id, slot, energy)
    # (serial, day) -> sessions, energy, Ah, s above 45 °C, s below 0 °C, samples,
    # temperature spread, hottest, last seen.
    days: dict[tuple[str, date], list[Any]] = {}
    serial = None
    p_ts: datetime | None = None
    p_station = p_slot = None
    p_energy = 0.0
    # The rows of a battery come in time order: a day's accumulator is looked up when the
    # battery or the day changes, not per row.
    day_end: datetime | None = None
    acc: list[Any] = []
    for row in rows:
        s_serial, s_ts, s_station, s_slot = row[0], row[1], row[2], row[3]
        current, t_min, t_max, energy = row[6], row[8], row[9], row[10]
        if s_serial != serial:
            serial = s_serial
            day_end = None
            before = previous.get(serial)
            if before is None:
                p_ts = None
            else:
                p_ts, p_station, p_slot, p_energy = before
        if day_end is None or s_ts >= day_end:
            day = s_ts.astimezone(UTC).date()
            acc = days.setdefault((s_serial, day), [0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, t_max, s_ts])
            day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + ONE_DAY
        dt = (s_ts - p_ts).total_seconds() if p_ts is not None else 0.0
        if p_ts is not None and p_station == s_station and p_slot == s_slot and dt < gap_s:
            acc[1] += energy - p_energy if energy >= p_energy else energy
            if current > 0:
                acc[2] += current * dt / 3600.0
            if t_max > HOT_C:
                acc[3] += dt
            if t_min < COLD_C:
                acc[4] += dt
        else:
            acc[0] += 1.0
            acc[1] += energy
        acc[5] += 1
        acc[6] += t_max - t_min
        if t_max > acc[7]:
            acc[7] = t_max
        acc[8] = s_ts
        p_ts, p_station, p_slot, p_energy = s_ts, s_station, s_slot, energy
    keys = list(days)
    columns = [[days[k][i] for k in keys] for i in range(9)]
    conn.execute(
        _APPENDED_UPSERT, ([k[0] for k in keys], [k[1] for k in keys], *columns), prepare=True
    )
    return True
