"""An oracle for battery_daily and charging_sessions: the rules of app/rollups computed row
by row in Python, independently of the generated SQL the ingest and the rebuild run. (It
was the ingest's own path for the kinds other than charging until the rules became data.)

battery_daily, added to once per batch from new rows only:

Counts, sums, minima and maxima add up directly. What depends on the previous sample of the
same battery (energy and Ah between samples, time above 45 °C or below 0 °C, where a charging
session starts) is a term of each consecutive pair; a new row changes its own term and its
successor's, so both are recomputed from the neighbours in the raw table and only the
difference is added. Redeliveries insert nothing and so add nothing; late rows land where
they belong.

Time weighting: a sample stands for the time since the previous sample of the same battery
from the same source (the same slot of the same station, or the same vehicle) when that gap
is shorter than the session gap; after a longer gap it stands for no time. So the first
sample of a charge or a trip adds no hours, and a device that goes silent is not assumed to
have stayed hot. Charging counts below 0 °C by the coldest cell (temp_c_min); vehicles report
only the hottest cell, so on the road below 0 °C means the whole pack was below 0 °C.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from app.ingest.derived import Sample, Session, _add_sample, _load_sessions, save_sessions
from app.rollups.daily import upsert_statement
from app.rollups.rules import COLD_C, CYCLES_LOOKBACK, DAILY, FIT_EPOCH, HOT_C, Merge
from devices.contract import RecordKind

Connection = psycopg.Connection[Any]


SUM_COLUMNS = tuple(c.name for c in DAILY if c.merge is Merge.SUM)
TIMED_GROUPS: tuple[tuple[str, tuple[str, ...], bool], ...] = tuple(
    (c.name, tuple(v.name for v in DAILY if v.led_by == c.name and v.name != c.name),
     c.merge is Merge.EARLIEST)
    for c in DAILY if c.led_by == c.name
)  # fmt: skip


def utc_day(ts: datetime) -> date:
    return ts.astimezone(UTC).date()


# ---------------------------------------------------------------- consecutive-sample terms

CHARGING_PAIR = (
    "charging_sessions",
    "energy_charged_kwh",
    "charged_ah",
    "seconds_above_45c",
    "seconds_below_0c",
)
VEHICLE_PAIR = ("energy_discharged_kwh", "discharged_ah", "seconds_above_45c", "seconds_below_0c")

# Window rows: (serial, ts, source key..., values...) as loaded below.
Row = tuple[Any, ...]
Terms = tuple[float, ...]


def charging_terms(prev: Row | None, s: Row, gap_s: float) -> Terms:
    """s = (serial, ts, station_id, slot, current_a, energy_kwh, temp_c_min, temp_c_max)."""
    dt = (s[1] - prev[1]).total_seconds() if prev is not None else None
    continuous = prev is not None and prev[2:4] == s[2:4] and dt is not None and dt < gap_s
    if not continuous or dt is None or prev is None:
        # The device's energy counter runs from the start of its charge.
        return (1.0, s[5], 0.0, 0.0, 0.0)
    energy = s[5] - prev[5] if s[5] >= prev[5] else s[5]
    return (
        0.0,
        energy,
        s[4] * dt / 3600.0 if s[4] > 0 else 0.0,
        dt if s[7] > HOT_C else 0.0,
        dt if s[6] < COLD_C else 0.0,
    )


def vehicle_terms(prev: Row | None, s: Row, gap_s: float) -> Terms:
    """s = (serial, ts, vin, pack_voltage_v, pack_current_a, temp_c_max)."""
    dt = (s[1] - prev[1]).total_seconds() if prev is not None else None
    if prev is None or dt is None or prev[2] != s[2] or dt >= gap_s:
        return (0.0, 0.0, 0.0, 0.0)
    current = s[4]
    return (
        -s[3] * current * dt / 3.6e6 if current < 0 else 0.0,
        -current * dt / 3600.0 if current < 0 else 0.0,
        dt if s[5] > HOT_C else 0.0,
        dt if s[5] < COLD_C else 0.0,
    )


def pair_deltas(
    window: Sequence[Row],
    new_keys: set[tuple[str, datetime]],
    terms: Callable[[Row | None, Row, float], Terms],
    gap_s: float,
) -> dict[tuple[str, date], list[float]]:
    """What the new rows change in the sum of pair terms, per (serial, day).

    window: every stored row of the batch's batteries from a session gap before their first
    new row to a gap after their last, ordered by serial and time; rows further away cannot
    be anyone's continuous neighbour, so they change nothing.
    """
    deltas: dict[tuple[str, date], list[float]] = {}
    prev_all: Row | None = None
    prev_old: Row | None = None
    prev_all_new = False
    for row in window:
        if prev_all is not None and prev_all[0] != row[0]:
            prev_all, prev_old, prev_all_new = None, None, False
        new = (row[0], row[1]) in new_keys
        if new:
            change: Terms | list[float] = terms(prev_all, row, gap_s)
        elif prev_all_new:
            after, before = terms(prev_all, row, gap_s), terms(prev_old, row, gap_s)
            change = [a - b for a, b in zip(after, before, strict=True)]
        else:
            change = ()
        if change:
            key = (row[0], utc_day(row[1]))
            acc = deltas.setdefault(key, [0.0] * len(change))
            for i, value in enumerate(change):
                acc[i] += value
        prev_all, prev_all_new = row, new
        if not new:
            prev_old = row
    return deltas


def _window_bounds(
    keys: Iterable[tuple[str, datetime]], gap: timedelta
) -> tuple[list[str], list[datetime], list[datetime]]:
    bounds: dict[str, tuple[datetime, datetime]] = {}
    for serial, ts in keys:
        lo, hi = bounds.get(serial, (ts, ts))
        bounds[serial] = (min(lo, ts), max(hi, ts))
    serials = sorted(bounds)
    return serials, [bounds[s][0] - gap for s in serials], [bounds[s][1] + gap for s in serials]


# ---------------------------------------------------------------- accumulation per battery-day


@dataclass
class DayDelta:
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    maxima: dict[str, Any] = field(default_factory=dict)
    minima: dict[str, Any] = field(default_factory=dict)
    timed: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def add(self, column: str, value: float) -> None:
        self.sums[column] += value

    def high(self, column: str, value: Any) -> None:
        current = self.maxima.get(column)
        self.maxima[column] = value if current is None else max(current, value)

    def low(self, column: str, value: Any) -> None:
        current = self.minima.get(column)
        self.minima[column] = value if current is None else min(current, value)

    def offer(self, ts_column: str, ts: datetime, values: tuple[Any, ...], earliest: bool) -> None:
        current = self.timed.get(ts_column)
        if current is None or (ts < current[0] if earliest else ts > current[0]):
            self.timed[ts_column] = (ts, *values)


class DailyDeltas:
    def __init__(self) -> None:
        self.days: dict[tuple[str, date], DayDelta] = defaultdict(DayDelta)

    def at(self, serial: str, ts: datetime) -> DayDelta:
        return self.days[(serial, utc_day(ts))]

    def rows(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Every column any day touched, and one row per battery-day in key order (the same
        lock order in every process, so concurrent ingests cannot deadlock on these rows)."""
        columns: list[str] = []
        seen: set[str] = set()

        def use(col: str) -> None:
            if col not in seen:
                seen.add(col)
                columns.append(col)

        timed_columns = {ts: (ts, *values) for ts, values, _ in TIMED_GROUPS}
        for delta in self.days.values():
            for col in (*delta.sums, *delta.maxima, *delta.minima):
                use(col)
            for ts_col in delta.timed:
                for col in timed_columns[ts_col]:
                    use(col)
        out: list[tuple[Any, ...]] = []
        for (serial, day), delta in sorted(self.days.items()):
            values: dict[str, Any] = {**delta.sums, **delta.maxima, **delta.minima}
            for ts_col, timed in delta.timed.items():
                values.update(zip(timed_columns[ts_col], timed, strict=True))
            out.append(
                (
                    serial,
                    day,
                    *(values.get(c, 0 if c in SUM_COLUMNS else None) for c in columns),
                )
            )
        return columns, out


# ---------------------------------------------------------------- sources


def _new_keys(rows: Sequence[tuple[Any, ...]]) -> set[tuple[str, datetime]]:
    return {(r[0], r[1]) for r in rows}


def add_charging(conn: Connection, keys: set[tuple[str, datetime]], gap_s: float,
                 out: DailyDeltas) -> None:  # fmt: skip
    if not keys:
        return
    serials, lows, highs = _window_bounds(keys, timedelta(seconds=gap_s))
    window = conn.execute(
        "SELECT c.battery_serial, c.ts, c.station_id, c.slot, c.current_a, c.energy_kwh,"
        " c.temp_c_min, c.temp_c_max"
        " FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS w(serial, lo, hi)"
        " JOIN charging_samples c ON c.battery_serial = w.serial AND c.ts >= w.lo AND c.ts <= w.hi"
        " ORDER BY c.battery_serial, c.ts",
        (serials, lows, highs),
    ).fetchall()
    for (serial, day), change in pair_deltas(window, keys, charging_terms, gap_s).items():
        delta = out.days[(serial, day)]
        for col, value in zip(CHARGING_PAIR, change, strict=True):
            delta.add(col, value)
    for row in window:
        if (row[0], row[1]) in keys:
            delta = out.at(row[0], row[1])
            delta.add("charging_samples", 1)
            delta.add("temp_spread_sum_c", row[7] - row[6])
            delta.high("temp_max_c", row[7])
            delta.high("last_seen_at", row[1])


def add_vehicle(conn: Connection, keys: set[tuple[str, datetime]], gap_s: float,
                out: DailyDeltas) -> None:  # fmt: skip
    if not keys:
        return
    serials, lows, highs = _window_bounds(keys, timedelta(seconds=gap_s))
    window = conn.execute(
        "SELECT v.battery_serial, v.ts, v.vin, v.pack_voltage_v, v.pack_current_a, v.temp_c_max"
        " FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS w(serial, lo, hi)"
        " JOIN vehicle_telemetry v"
        " ON v.battery_serial = w.serial AND v.ts >= w.lo AND v.ts <= w.hi"
        " ORDER BY v.battery_serial, v.ts, v.vin",
        (serials, lows, highs),
    ).fetchall()
    for (serial, day), change in pair_deltas(window, keys, vehicle_terms, gap_s).items():
        delta = out.days[(serial, day)]
        for col, value in zip(VEHICLE_PAIR, change, strict=True):
            delta.add(col, value)
    for row in window:
        if (row[0], row[1]) in keys:
            delta = out.at(row[0], row[1])
            delta.add("vehicle_samples", 1)
            delta.high("temp_max_c", row[5])
            delta.high("last_seen_at", row[1])


def add_health(conn: Connection, keys: set[tuple[str, datetime]], out: DailyDeltas) -> None:
    if not keys:
        return
    ordered = sorted(keys)
    rows = conn.execute(
        "SELECT h.battery_serial, h.ts, h.soh_pct, h.internal_resistance_mohm,"
        " h.cell_voltage_min_v, h.cell_voltage_max_v, h.temp_c_max, h.cycle_count"
        " FROM unnest(%s::text[], %s::timestamptz[]) AS k(serial, ts)"
        " JOIN health_records h ON h.battery_serial = k.serial AND h.ts = k.ts",
        ([k[0] for k in ordered], [k[1] for k in ordered]),
    ).fetchall()
    for serial, ts, soh, resistance, cell_min, cell_max, temp, cycles in rows:
        delta = out.at(serial, ts)
        delta.add("health_records", 1)
        delta.offer("health_first_ts", ts, (soh, resistance), earliest=True)
        delta.offer("health_last_ts", ts, (soh, resistance, float(cycles)), earliest=False)
        delta.high("soh_max_pct", soh)
        delta.low("soh_min_pct", soh)
        delta.high("cell_imbalance_max_mv", (cell_max - cell_min) * 1000.0)
        delta.high("temp_max_c", temp)
        delta.high("last_seen_at", ts)


CAPACITY_WITH_CYCLES = (
    " c.battery_serial, c.ts, c.capacity_ah, c.capacity_kwh,"
    " (SELECT h.cycle_count FROM health_records h WHERE h.battery_serial = c.battery_serial"
    "  AND h.ts <= c.ts AND h.ts > c.ts - %(lookback)s ORDER BY h.ts DESC LIMIT 1) AS cycles"
)


def fit_days(ts: datetime) -> float:
    return (ts - FIT_EPOCH).total_seconds() / 86400.0


def add_capacity(conn: Connection, keys: set[tuple[str, datetime]], out: DailyDeltas) -> None:
    """Cycles at a measurement come from the latest health record at or before it (a station
    reports health with every completed charge), so a capacity record whose health record
    arrives in a later batch counts as of unknown cycles here and is fitted over time only."""
    if not keys:
        return
    ordered = sorted(keys)
    rows = conn.execute(
        f"SELECT {CAPACITY_WITH_CYCLES}"
        " FROM unnest(%(serials)s::text[], %(ts)s::timestamptz[]) AS k(serial, ts)"
        " JOIN capacity_records c ON c.battery_serial = k.serial AND c.ts = k.ts",
        {
            "serials": [k[0] for k in ordered],
            "ts": [k[1] for k in ordered],
            "lookback": CYCLES_LOOKBACK,
        },
    ).fetchall()
    for serial, ts, ah, kwh, cycles in rows:
        delta = out.at(serial, ts)
        x = fit_days(ts)
        delta.add("capacity_records", 1)
        delta.add("capacity_sum_ah", ah)
        delta.add("fit_days_sx", x)
        delta.add("fit_days_sxx", x * x)
        delta.add("fit_days_sxy", x * ah)
        delta.offer("capacity_last_ts", ts, (ah, kwh), earliest=False)
        delta.high("last_seen_at", ts)
        if cycles is not None:
            c = float(cycles)
            delta.add("fit_cycles_n", 1)
            delta.add("fit_cycles_sx", c)
            delta.add("fit_cycles_sy", ah)
            delta.add("fit_cycles_sxx", c * c)
            delta.add("fit_cycles_sxy", c * ah)


def update_daily_aggregates(
    conn: Connection,
    inserted: dict[RecordKind, list[tuple[Any, ...]]],
    *,
    session_gap_s: float,
) -> int:
    """Adds the newly inserted rows (each starting with battery_serial, ts) to battery_daily;
    returns the number of battery-days touched."""
    out = DailyDeltas()
    add_charging(conn, _new_keys(inserted.get(RecordKind.charging, [])), session_gap_s, out)
    add_vehicle(conn, _new_keys(inserted.get(RecordKind.vehicle, [])), session_gap_s, out)
    add_health(conn, _new_keys(inserted.get(RecordKind.health, [])), out)
    add_capacity(conn, _new_keys(inserted.get(RecordKind.capacity, [])), out)
    columns, rows = out.rows()
    if not rows:
        return 0
    placeholders = ", ".join(["%s"] * (len(columns) + 2))
    with conn.cursor() as cur:
        cur.executemany(upsert_statement(columns, f"VALUES ({placeholders})"), rows)
    return len(rows)


def roll_up_sessions(conn: Connection, samples: list[tuple[Any, ...]], gap_s: float) -> None:
    """charging_sessions one sample at a time. samples: (battery_serial, ts, station_id,
    slot, soc_pct, energy_kwh, temp_c_max)."""
    if not samples:
        return
    gap = timedelta(seconds=gap_s)
    by_battery: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for sample in samples:
        by_battery[sample[0]].append(sample)
    sessions: dict[str, list[Session]] = _load_sessions(
        conn, list(by_battery), min(s[1] for s in samples), max(s[1] for s in samples), gap
    )
    for serial, battery_samples in by_battery.items():
        for _, ts, station_id, slot, soc, energy, temp in sorted(
            battery_samples, key=lambda s: s[1]
        ):
            _add_sample(
                sessions[serial], serial, Sample(ts, station_id, slot, soc, energy, temp), gap
            )
    save_sessions(conn, sessions)
