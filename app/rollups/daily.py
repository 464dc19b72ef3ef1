"""battery_daily's SQL, generated from app/rollups/rules.py.

Every source of battery_daily rows is a SELECT of (battery_serial, day, columns...) merged
into the table by `upsert_statement`; the same SELECT serves the ingest, over a batch's new
rows, and the rebuild, over a window of days. Counts, sums, minima and maxima of new rows add
up directly. A pair term (rules.PairRule) depends on the previous sample of the battery: a
new row changes its own term and its successor's, so both are recomputed from the neighbours
in the raw table and only the difference is added. Redeliveries insert nothing and so add
nothing; late rows land where they belong.
"""

from collections.abc import Sequence

from app.rollups.rules import DAILY, Aggregate, Merge, PairRule, RowSource

DAY = "({ts} AT TIME ZONE 'UTC')::date"


def _merge_set_clause(columns: Sequence[str]) -> str:
    """ON CONFLICT ... DO UPDATE SET for the given columns; the rest keep their values."""
    present = set(columns)
    parts: list[str] = []
    for col in DAILY:
        if col.name not in present:
            continue
        name = col.name
        if col.merge is Merge.SUM:
            parts.append(f"{name} = battery_daily.{name} + EXCLUDED.{name}")
        elif col.merge is Merge.MAX:
            parts.append(f"{name} = GREATEST(battery_daily.{name}, EXCLUDED.{name})")
        elif col.merge is Merge.MIN:
            parts.append(f"{name} = LEAST(battery_daily.{name}, EXCLUDED.{name})")
        else:
            ts = col.led_by
            if ts not in present:
                raise ValueError(f"{name} is merged by {ts}, which is not written")
            better = "<" if col.merge is Merge.EARLIEST else ">"
            wins = f"(battery_daily.{ts} IS NULL OR EXCLUDED.{ts} {better} battery_daily.{ts})"
            parts.append(
                f"{name} = CASE WHEN {wins} THEN EXCLUDED.{name} ELSE battery_daily.{name} END"
            )
    return ", ".join(parts)


def upsert_statement(columns: Sequence[str], source: str) -> str:
    """INSERT INTO battery_daily (battery_serial, day, *columns) <source> ON CONFLICT merge."""
    names = ", ".join(("battery_serial", "day", *columns))
    return (
        f"INSERT INTO battery_daily ({names}) {source}"
        f" ON CONFLICT (battery_serial, day) DO UPDATE SET {_merge_set_clause(columns)}"
    )


def _lags(rule: PairRule, columns: Sequence[str], src: str, dst: str) -> str:
    """The predecessor's ts, source and the columns its terms read, from {src}_* columns
    over window w, as {dst}_*."""
    read = [c for c in columns if any("{p}_" + c in t.continued for t in rule.terms)]
    names = dict.fromkeys(("ts", *rule.source, *read))
    return ", ".join(f"lag({src}_{c}) OVER w AS {dst}_{c}" for c in names)


def _window(rule: PairRule) -> str:
    order = ", ".join(f"s_{c}" for c in rule.order)
    return f"WINDOW w AS (PARTITION BY s_battery_serial ORDER BY {order})"


def _continuous(rule: PairRule, s: str, p: str) -> str:
    same = " AND ".join(f"{p}_{c} = {s}_{c}" for c in rule.source)
    return f"coalesce({p}_ts IS NOT NULL AND {same} AND {p}_dt < %(gap)s::float8, false)"


def _aggregate(a: Aggregate, only_new: bool) -> str:
    where = " FILTER (WHERE s_new)" if only_new else ""
    if a.func == "count":
        return f"count({a.expr}){where}"
    if a.func == "sum":
        return f"coalesce(sum({a.expr}){where}, 0)"
    if a.func in ("max", "min"):
        return f"{a.func}({a.expr}){where}"
    order = "s_ts" if a.func == "first" else "s_ts DESC"
    return f"(array_agg({a.expr} ORDER BY {order}){where})[1]"


def _sums(source: RowSource, only_new: bool) -> str:
    return ", ".join(f"{_aggregate(a, only_new)} AS {a.column}" for a in source.aggregates)


def _sample(source: RowSource) -> str:
    """The rows of `t` as s_<column>."""
    names = dict.fromkeys(("battery_serial", "ts", *source.columns))
    return ", ".join(
        [f"t.{c} AS s_{c}" for c in names] + [f"{sql} AS s_{c}" for c, sql in source.computed]
    )


def _paired(source: RowSource, rule: PairRule, samples: str, keep: str) -> str:
    """The battery-days of the rows of `samples` (a relation of s_* columns holding, besides
    the rows to sum, each one's predecessor) that meet `keep`: pair terms and aggregates."""
    pairs = ", ".join(
        f"sum({t.sql(s='s', p='p', dt='p_dt', continuous='p_continuous')}) AS {t.column}"
        for t in rule.terms
    )
    # OFFSET 0 keeps each level a subquery of its own, so that p_dt and p_continuous are
    # computed once per row: pulled up, every reference in the terms would recompute them
    # (extract() of an interval is numeric arithmetic, and the terms name them about 15 times).
    return f"""
SELECT s_battery_serial, {DAY.format(ts="s_ts")} AS day, {pairs},
    {_sums(source, only_new=False)}
FROM (
    SELECT *, {_continuous(rule, "s", "p")} AS p_continuous
    FROM (
        SELECT *, extract(epoch FROM s_ts - p_ts)::float8 AS p_dt
        FROM (
            SELECT *, {_lags(rule, rule.values, "s", "p")}
            FROM ({samples}) samples
            {_window(rule)}
        ) lagged
        WHERE {keep}
        OFFSET 0
    ) timed
    OFFSET 0
) paired
GROUP BY 1, 2"""


def rebuild_select(source: RowSource, serials: str) -> str:
    """The battery-days of [%(lo)s, %(hi)s) recomputed from the raw table (its samples from a
    session gap earlier, %(lo_gap)s, as predecessors); `serials`: a condition on the table's
    row `t` narrowing the batteries, or ""."""
    rule = source.pairs
    rows = f"SELECT {_sample(source)} FROM {source.table} t"
    if rule is None:
        return f"""
SELECT s_battery_serial, {DAY.format(ts="s_ts")} AS day, {_sums(source, only_new=False)}
FROM ({rows} WHERE t.ts >= %(lo)s AND t.ts < %(hi)s {serials}) s
GROUP BY 1, 2"""
    samples = f"{rows} WHERE t.ts >= %(lo_gap)s AND t.ts < %(hi)s {serials}"
    return _paired(source, rule, samples, "s_ts >= %(lo)s")


def append_select(source: RowSource, new: str) -> str:
    """incremental_select for a batch that only appends to each battery's history, in key
    order; no rows at all for any other batch, which then needs incremental_select.

    `new`: a relation of the new rows (distinct keys, already inserted) with the source's
    columns, not only their keys. The batch only appends when, from each battery's first new
    row to a session gap after its last, the table holds its new rows and nothing else. Then
    each new row's predecessor is the new row before it or, for the first, the stored row
    before, and no old row's predecessor changed (none follows within a gap); so the new rows
    are read from `new` and only the predecessors from the table, and no row is looked up,
    marked as new or recomputed as before."""
    rule = source.pairs
    if rule is None or source.computed:
        raise ValueError(f"{source.table}: the append path is for pair terms over raw columns")
    sample, table = _sample(source), source.table
    # The batch appends when each battery's rows from its first new row to a gap after its
    # last are its new rows: one test for the whole batch, before its rows are read.
    appends = f"""(
    SELECT bool_and(b.n = (
        SELECT count(*) FROM {table} t WHERE t.battery_serial = b.battery_serial
            AND t.ts >= b.first AND t.ts <= b.last + %(gap_interval)s))
    FROM bounds b)"""
    samples = f"""
SELECT {sample}, false AS s_new
FROM bounds b
JOIN {table} t ON t.battery_serial = b.battery_serial AND t.ts = (
    SELECT max(ts) FROM {table} WHERE battery_serial = b.battery_serial
        AND ts < b.first AND ts >= b.first - %(gap_interval)s)
UNION ALL
SELECT {sample}, true FROM {new} t WHERE {appends}"""
    return f"""
WITH bounds AS MATERIALIZED (
    SELECT battery_serial, min(ts) AS first, max(ts) AS last, count(*) AS n
    FROM {new} GROUP BY battery_serial
)
{_paired(source, rule, samples, "s_new")}
ORDER BY 1, 2"""


def incremental_select(source: RowSource, new: str) -> str:
    """What the new rows change in battery_daily, in key order (the lock order of every
    writer of battery_daily). `new`: a relation of the distinct (battery_serial, ts) of the
    rows the batch inserted.

    A pair term changes for each new row and for an old row right after a new one: the
    difference between its term against the new predecessor and against its old one. Only
    the rows between a battery's first and last new row, and the nearest row either side
    within a session gap (%(gap_interval)s), have or are the neighbours of a changed term."""
    rule = source.pairs
    table, sample = source.table, _sample(source)
    if rule is None:
        return f"""
SELECT s_battery_serial, {DAY.format(ts="s_ts")} AS day, {_sums(source, only_new=False)}
FROM (
    SELECT {sample} FROM {new} n
    JOIN {table} t ON t.battery_serial = n.battery_serial AND t.ts = n.ts
) s
GROUP BY 1, 2
ORDER BY 1, 2"""
    pairs = ", ".join(
        f"sum(CASE WHEN s_new THEN {after} ELSE ({after}) - ({before}) END) AS {t.column}"
        for t in rule.terms
        for after, before in [
            (
                t.sql(s="s", p="p", dt="p_dt", continuous="p_continuous"),
                t.sql(s="s", p="o", dt="o_dt", continuous="o_continuous"),
            )
        ]
    )
    key = ("battery_serial", "ts", *rule.order[1:])
    return f"""
WITH bounds AS (
    SELECT battery_serial, min(ts) AS first, max(ts) AS last
    FROM {new} n GROUP BY battery_serial ORDER BY battery_serial
), win AS MATERIALIZED (
    -- In time order per battery, so that sorts find it sorted.
    SELECT c.*, n.ts IS NOT NULL AS s_new
    FROM bounds b
    CROSS JOIN LATERAL (
        -- max()/min() rather than ORDER BY ... LIMIT 1: per partition, one index probe; the
        -- planner sorts the whole gap's rows for the latter.
        SELECT {sample} FROM {table} t
        WHERE t.battery_serial = b.battery_serial AND t.ts = (
            SELECT max(ts) FROM {table} WHERE battery_serial = b.battery_serial
                AND ts < b.first AND ts >= b.first - %(gap_interval)s)
        UNION ALL
        (SELECT {sample} FROM {table} t
         WHERE t.battery_serial = b.battery_serial AND t.ts >= b.first AND t.ts <= b.last)
        UNION ALL
        SELECT {sample} FROM {table} t
        WHERE t.battery_serial = b.battery_serial AND t.ts = (
            SELECT min(ts) FROM {table} WHERE battery_serial = b.battery_serial
                AND ts > b.last AND ts <= b.last + %(gap_interval)s)
    ) c
    LEFT JOIN {new} n ON n.battery_serial = c.s_battery_serial AND n.ts = c.s_ts
), paired AS (
    -- p_*: the row before (new or old). Each row's time difference is computed once
    -- (extract() of an interval is numeric arithmetic).
    SELECT s.*, extract(epoch FROM s_ts - p_ts)::float8 AS p_dt
    FROM (
        SELECT win.*, {_lags(rule, rule.values, "s", "p")},
            coalesce(lag(s_new) OVER w, false) AS p_new
        FROM win {_window(rule)}
    ) s
    WHERE s_new OR p_new
    -- Computed once per row, not wherever the terms name it (see _paired).
    OFFSET 0
), olds AS (
    -- o_*: the old row before, which an old row right after a new one had as its
    -- predecessor until now; among the old rows only, which are few.
    SELECT s.*, extract(epoch FROM o_at_ts - o_ts)::float8 AS o_dt
    FROM (
        SELECT {", ".join(f"s_{c} AS o_at_{c}" for c in key)},
            {", ".join(f"s_{c} AS o_s_{c}" for c in rule.source)},
            {_lags(rule, rule.values, "s", "o")}
        FROM win WHERE NOT s_new {_window(rule)}
    ) s
    OFFSET 0
), terms AS (
    SELECT paired.*, olds.*,
        {_continuous(rule, "s", "p")} AS p_continuous,
        {_continuous(rule, "o_s", "o")} AS o_continuous
    FROM paired
    LEFT JOIN olds ON NOT s_new AND {" AND ".join(f"o_at_{c} = s_{c}" for c in key)}
    OFFSET 0
)
SELECT s_battery_serial, {DAY.format(ts="s_ts")} AS day, {pairs},
    {_sums(source, only_new=True)}
FROM terms
GROUP BY 1, 2
ORDER BY 1, 2"""
