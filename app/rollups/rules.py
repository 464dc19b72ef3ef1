"""The aggregate rules, as data: each column of battery_daily and battery_monthly once.

A daily column says how two partial values of one battery-day merge (an upsert adding a
batch to a stored row); a RowSource says how a raw table's samples make a battery-day's
values (aggregates of its samples, and the terms that depend on the previous sample of the
same battery: energy and Ah between samples, time above 45 °C or below 0 °C, where a
charging session starts); a monthly column says which expression over a battery_daily row
`d` it sums (or takes the maximum or minimum of). The expressions are SQL fragments, so the
incremental update, the rebuild and the reports are generated from the same text
(app/rollups/daily.py, monthly.py).

Time weighting: a sample stands for the time since the previous sample of the same battery
from the same source (the same slot of the same station, or the same vehicle) when that gap
is shorter than the session gap; after a longer gap it stands for no time. So the first
sample of a charge or a trip adds no hours, and a device that goes silent is not assumed to
have stayed hot. Charging counts below 0 °C by the coldest cell (temp_c_min); vehicles report
only the hottest cell, so on the road below 0 °C means the whole pack was below 0 °C.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Literal

HOT_C = 45.0
COLD_C = 0.0
# x of the capacity-over-time fit: days since this instant (any origin gives the same slope;
# a recent one keeps the sums of squares small).
FIT_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
# Cycles at a capacity measurement: the battery's latest health record at most this old.
CYCLES_LOOKBACK = timedelta(days=30)
# x of the cell-imbalance trend: days since this day.
IMBALANCE_EPOCH = date(2020, 1, 1)


class Merge(Enum):
    SUM = "sum"
    MAX = "max"
    MIN = "min"
    # Part of a group led by a timestamp column: the whole group comes from the row whose
    # timestamp is the earliest (or latest).
    EARLIEST = "earliest"
    LATEST = "latest"


@dataclass(frozen=True)
class DailyColumn:
    name: str
    merge: Merge
    # For EARLIEST/LATEST: the group's timestamp column (itself, for the timestamp).
    led_by: str | None = None


def _sums(*names: str) -> tuple[DailyColumn, ...]:
    return tuple(DailyColumn(n, Merge.SUM) for n in names)


def _timed(merge: Merge, ts: str, *values: str) -> tuple[DailyColumn, ...]:
    return tuple(DailyColumn(n, merge, ts) for n in (ts, *values))


DAILY: tuple[DailyColumn, ...] = (
    *_sums(
        "charging_samples", "charging_sessions", "energy_charged_kwh", "charged_ah",
        "temp_spread_sum_c", "vehicle_samples", "energy_discharged_kwh", "discharged_ah",
        "seconds_above_45c", "seconds_below_0c", "health_records", "capacity_records",
        "capacity_sum_ah", "fit_days_sx", "fit_days_sxx", "fit_days_sxy", "fit_days_syy",
        "fit_cycles_n", "fit_cycles_sx", "fit_cycles_sy", "fit_cycles_sxx", "fit_cycles_sxy",
        "fit_cycles_syy", "swaps_in", "swaps_out", "health_rejections",
    ),
    DailyColumn("temp_max_c", Merge.MAX),
    DailyColumn("soh_max_pct", Merge.MAX),
    DailyColumn("cell_imbalance_max_mv", Merge.MAX),
    DailyColumn("last_seen_at", Merge.MAX),
    DailyColumn("soh_min_pct", Merge.MIN),
    *_timed(Merge.EARLIEST, "health_first_ts", "soh_first_pct", "resistance_first_mohm"),
    *_timed(Merge.LATEST, "health_last_ts", "soh_last_pct", "resistance_last_mohm", "cycles_last"),
    *_timed(Merge.LATEST, "capacity_last_ts", "capacity_last_ah", "capacity_last_kwh"),
)  # fmt: skip


@dataclass(frozen=True)
class MonthlyColumn:
    name: str
    merge: Merge  # SUM, MAX or MIN, across the days of the month
    # What one battery_daily row `{d}` contributes, {d} standing for the row's alias.
    per_day: str

    def of(self, d: str) -> str:
        return self.per_day.format(d=d)


# The day as x of the imbalance trend, and whether the day has a value.
_IMB_X = f"({{d}}.day - DATE '{IMBALANCE_EPOCH.isoformat()}')::float8"
_NO_IMB = "{d}.cell_imbalance_max_mv IS NULL"


def _monthly_sums(*names: str) -> tuple[MonthlyColumn, ...]:
    return tuple(MonthlyColumn(n, Merge.SUM, f"{{d}}.{n}") for n in names)


MONTHLY: tuple[MonthlyColumn, ...] = (
    MonthlyColumn("days", Merge.SUM, "1"),
    *_monthly_sums(
        "charging_samples", "charging_sessions", "capacity_records", "fit_cycles_n",
        "swaps_in", "swaps_out", "health_rejections", "health_records",
        "energy_charged_kwh", "charged_ah", "temp_spread_sum_c", "energy_discharged_kwh",
        "discharged_ah", "seconds_above_45c", "seconds_below_0c", "capacity_sum_ah",
        "fit_days_sx", "fit_days_sxx", "fit_days_sxy", "fit_days_syy", "fit_cycles_sx",
        "fit_cycles_sy", "fit_cycles_sxx", "fit_cycles_sxy", "fit_cycles_syy",
    ),
    # Least-squares sums of cell_imbalance_max_mv over the day, days with a value.
    MonthlyColumn("imbalance_n", Merge.SUM, f"CASE WHEN {_NO_IMB} THEN 0 ELSE 1 END"),
    MonthlyColumn("imbalance_sx", Merge.SUM, f"CASE WHEN {_NO_IMB} THEN 0 ELSE {_IMB_X} END"),
    MonthlyColumn("imbalance_sy", Merge.SUM, "COALESCE({d}.cell_imbalance_max_mv, 0)"),
    MonthlyColumn(
        "imbalance_sxx", Merge.SUM, f"CASE WHEN {_NO_IMB} THEN 0 ELSE {_IMB_X}^2 END"
    ),
    MonthlyColumn(
        "imbalance_sxy", Merge.SUM, f"COALESCE({{d}}.cell_imbalance_max_mv * {_IMB_X}, 0)"
    ),
    MonthlyColumn("temp_max_c", Merge.MAX, "{d}.temp_max_c"),
    MonthlyColumn("last_seen_at", Merge.MAX, "{d}.last_seen_at"),
    MonthlyColumn("first_day", Merge.MIN, "{d}.day"),
)  # fmt: skip
MONTHLY_BY_NAME = {c.name: c for c in MONTHLY}


@dataclass(frozen=True)
class PairTerm:
    """A battery_daily sum over consecutive samples of one battery: `first` for a sample that
    does not continue its predecessor (none, another source, or a session gap before), else
    `continued`. Templates over the sample's columns as `{s}_<column>` (`{s}` the sample's
    prefix), the predecessor's as `{p}_<column>`, and `{dt}`, the seconds between them."""

    column: str
    first: str
    continued: str

    def sql(self, *, s: str, p: str, dt: str, continuous: str) -> str:
        first = self.first.format(s=s, p=p, dt=dt)
        continued = self.continued.format(s=s, p=p, dt=dt)
        return f"CASE WHEN {continuous} THEN {continued} ELSE {first} END"


@dataclass(frozen=True)
class PairRule:
    """The pair terms of one raw table. A sample continues its predecessor (the one before it
    in `order` among the battery's samples) when every `source` column is equal and it came
    less than a session gap later."""

    table: str
    source: tuple[str, ...]
    order: tuple[str, ...]
    # Columns the terms and the other sums read, besides battery_serial and ts.
    values: tuple[str, ...]
    terms: tuple[PairTerm, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(t.column for t in self.terms)


_ZERO = "0.0::float8"


def _seconds_if(condition: str) -> str:
    """The time since the predecessor when the sample meets the condition."""
    return f"CASE WHEN {condition} THEN {{dt}} ELSE {_ZERO} END"


CHARGING_PAIRS = PairRule(
    table="charging_samples",
    source=("station_id", "slot"),
    order=("ts",),
    values=("current_a", "energy_kwh", "temp_c_min", "temp_c_max"),
    terms=(
        PairTerm("charging_sessions", "1.0::float8", _ZERO),
        # The device's energy counter runs from the start of its charge.
        PairTerm(
            "energy_charged_kwh",
            "{s}_energy_kwh",
            "CASE WHEN {s}_energy_kwh >= {p}_energy_kwh THEN {s}_energy_kwh - {p}_energy_kwh"
            " ELSE {s}_energy_kwh END",
        ),
        PairTerm(
            "charged_ah",
            _ZERO,
            f"CASE WHEN {{s}}_current_a > 0 THEN {{s}}_current_a * {{dt}} / 3600.0::float8"
            f" ELSE {_ZERO} END",
        ),
        PairTerm("seconds_above_45c", _ZERO, _seconds_if(f"{{s}}_temp_c_max > {HOT_C!r}")),
        PairTerm("seconds_below_0c", _ZERO, _seconds_if(f"{{s}}_temp_c_min < {COLD_C!r}")),
    ),
)  # fmt: skip

VEHICLE_PAIRS = PairRule(
    table="vehicle_telemetry",
    source=("vin",),
    order=("ts", "vin"),
    values=("pack_voltage_v", "pack_current_a", "temp_c_max"),
    terms=(
        PairTerm(
            "energy_discharged_kwh",
            _ZERO,
            "CASE WHEN {s}_pack_current_a < 0"
            " THEN -{s}_pack_voltage_v * {s}_pack_current_a * {dt} / 3.6e6::float8"
            f" ELSE {_ZERO} END",
        ),
        PairTerm(
            "discharged_ah",
            _ZERO,
            "CASE WHEN {s}_pack_current_a < 0 THEN -{s}_pack_current_a * {dt} / 3600.0::float8"
            f" ELSE {_ZERO} END",
        ),
        PairTerm("seconds_above_45c", _ZERO, _seconds_if(f"{{s}}_temp_c_max > {HOT_C!r}")),
        PairTerm("seconds_below_0c", _ZERO, _seconds_if(f"{{s}}_temp_c_max < {COLD_C!r}")),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Aggregate:
    """A battery_daily column as an aggregate of the samples of one battery-day: `expr` over
    the sample's columns s_<column>; `func` count, sum, max, min, or first / last (the value
    of the earliest / latest sample)."""

    column: str
    func: Literal["count", "sum", "max", "min", "first", "last"]
    expr: str = "*"


@dataclass(frozen=True)
class RowSource:
    """A raw table's contribution to battery_daily: aggregates of its samples per
    battery-day and, for the time series, pair terms. `columns`: the table's columns the
    aggregates read; `computed`: further sample columns, SQL over the table's row `t` (with
    the parameters %(epoch)s and %(lookback)s)."""

    table: str
    columns: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    computed: tuple[tuple[str, str], ...] = ()
    pairs: PairRule | None = None

    @property
    def written(self) -> tuple[str, ...]:
        pairs = self.pairs.columns if self.pairs is not None else ()
        return (*pairs, *(a.column for a in self.aggregates))


_LAST_SEEN = Aggregate("last_seen_at", "max", "s_ts")

CHARGING = RowSource(
    "charging_samples",
    ("station_id", "slot", "current_a", "energy_kwh", "temp_c_min", "temp_c_max"),
    (
        Aggregate("charging_samples", "count"),
        Aggregate("temp_spread_sum_c", "sum", "s_temp_c_max - s_temp_c_min"),
        Aggregate("temp_max_c", "max", "s_temp_c_max"),
        _LAST_SEEN,
    ),
    pairs=CHARGING_PAIRS,
)
VEHICLE = RowSource(
    "vehicle_telemetry",
    ("vin", "pack_voltage_v", "pack_current_a", "temp_c_max"),
    (
        Aggregate("vehicle_samples", "count"),
        Aggregate("temp_max_c", "max", "s_temp_c_max"),
        _LAST_SEEN,
    ),
    pairs=VEHICLE_PAIRS,
)
HEALTH = RowSource(
    "health_records",
    ("soh_pct", "internal_resistance_mohm", "cell_voltage_min_v", "cell_voltage_max_v",
     "temp_c_max", "cycle_count"),
    (
        Aggregate("health_records", "count"),
        Aggregate("health_first_ts", "min", "s_ts"),
        Aggregate("soh_first_pct", "first", "s_soh_pct"),
        Aggregate("resistance_first_mohm", "first", "s_internal_resistance_mohm"),
        Aggregate("health_last_ts", "max", "s_ts"),
        Aggregate("soh_last_pct", "last", "s_soh_pct"),
        Aggregate("resistance_last_mohm", "last", "s_internal_resistance_mohm"),
        Aggregate("cycles_last", "last", "s_cycle_count::float8"),
        Aggregate("soh_max_pct", "max", "s_soh_pct"),
        Aggregate("soh_min_pct", "min", "s_soh_pct"),
        Aggregate("cell_imbalance_max_mv", "max",
                  "(s_cell_voltage_max_v - s_cell_voltage_min_v) * 1000.0"),
        Aggregate("temp_max_c", "max", "s_temp_c_max"),
        _LAST_SEEN,
    ),
)  # fmt: skip
# Cycles at a measurement come from the latest health record at or before it (a station
# reports health with every completed charge), so a capacity record whose health record
# arrives in a later batch counts as of unknown cycles and is fitted over time only.
CAPACITY = RowSource(
    "capacity_records",
    ("capacity_ah", "capacity_kwh"),
    (
        Aggregate("capacity_records", "count"),
        Aggregate("capacity_sum_ah", "sum", "s_capacity_ah"),
        Aggregate("fit_days_sx", "sum", "s_x"),
        Aggregate("fit_days_sxx", "sum", "s_x * s_x"),
        Aggregate("fit_days_sxy", "sum", "s_x * s_capacity_ah"),
        # The sum of y squared gives the fit's residuals, hence its standard error.
        Aggregate("fit_days_syy", "sum", "s_capacity_ah * s_capacity_ah"),
        Aggregate("fit_cycles_n", "count", "s_cycles"),
        Aggregate("fit_cycles_sx", "sum", "s_cycles"),
        Aggregate("fit_cycles_sy", "sum", "CASE WHEN s_cycles IS NOT NULL THEN s_capacity_ah END"),
        Aggregate("fit_cycles_sxx", "sum", "s_cycles * s_cycles"),
        Aggregate("fit_cycles_sxy", "sum", "s_cycles * s_capacity_ah"),
        Aggregate(
            "fit_cycles_syy", "sum",
            "CASE WHEN s_cycles IS NOT NULL THEN s_capacity_ah * s_capacity_ah END",
        ),
        Aggregate("capacity_last_ts", "max", "s_ts"),
        Aggregate("capacity_last_ah", "last", "s_capacity_ah"),
        Aggregate("capacity_last_kwh", "last", "s_capacity_kwh"),
        _LAST_SEEN,
    ),
    computed=(
        ("x", "extract(epoch FROM t.ts - %(epoch)s)::float8 / 86400.0"),
        ("cycles", "(SELECT h.cycle_count::float8 FROM health_records h"
                   " WHERE h.battery_serial = t.battery_serial AND h.ts <= t.ts"
                   " AND h.ts > t.ts - %(lookback)s ORDER BY h.ts DESC LIMIT 1)"),
    ),
)  # fmt: skip
TELEMETRY = (CHARGING, VEHICLE, HEALTH, CAPACITY)
