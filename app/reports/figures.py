"""A battery's figures from its window sums (fade rates, resistance growth, cycles), and the
fleet's distributions of them (percentiles, histograms)."""

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import date

from app.reports.rows import BatteryWindow, CohortInputs, SohPoint
from app.reports.schemas import BatteryReportRow, HistogramBin, SohPercentiles

SOH_BIN_PCT = 5.0
DAYS_PER_YEAR = 365.25


def least_squares_slope(n: float, sx: float, sy: float, sxx: float, sxy: float) -> float | None:
    """Slope of y on x from the sums; None below 3 points or when x does not vary."""
    if n < 3:
        return None
    spread = n * sxx - sx * sx
    # Relative guard: the sums of squares are large next to their differences.
    if spread <= 1e-12 * max(1.0, n * sxx):
        return None
    return (n * sxy - sx * sy) / spread


def fade_per_year(row: CohortInputs) -> float | None:
    """% of nominal capacity lost per year; positive means fading."""
    per_day = least_squares_slope(
        row.fit_days_n, row.fit_days_sx, row.fit_days_sy, row.fit_days_sxx, row.fit_days_sxy
    )
    if per_day is None:
        return None
    return -per_day / float(row.nominal_capacity_ah) * 100.0 * DAYS_PER_YEAR


def fade_rates(row: BatteryWindow) -> tuple[float | None, float | None]:
    """(% of nominal capacity lost per 1,000 cycles, per year); positive means fading."""
    per_cycle = least_squares_slope(
        row.fit_cycles_n, row.fit_cycles_sx, row.fit_cycles_sy,
        row.fit_cycles_sxx, row.fit_cycles_sxy,
    )  # fmt: skip
    nominal = float(row.nominal_capacity_ah)
    return (
        None if per_cycle is None else -per_cycle / nominal * 100.0 * 1000.0,
        fade_per_year(row),
    )


def resistance_increase_pct(first: float | None, last: float | None) -> float | None:
    if first is None or last is None or first <= 0:
        return None
    return (last / first - 1.0) * 100.0


def cycles_of(row: BatteryWindow | SohPoint) -> float | None:
    cycles = row.cycles_end
    return float(cycles) if cycles is not None else row.battery_cycles


def report_row(row: BatteryWindow, day_to: date) -> BatteryReportRow:
    per_1000, per_year = fade_rates(row)
    made = row.manufactured_on
    # A battery that sent nothing in the window has no throughput or time at temperature in
    # it, rather than 0.
    seen = row.last_seen_at is not None
    return BatteryReportRow(
        serial=row.serial,
        pack_type_code=row.pack_type_code,
        oem_code=row.oem_code,
        state=row.state,
        age_days=(day_to - made).days if made is not None else None,
        equivalent_full_cycles=cycles_of(row),
        equivalent_full_cycles_measured_at=(
            row.cycles_end_ts if row.cycles_end is not None else row.cycles_measured_at
        ),
        energy_throughput_kwh=row.energy_charged_kwh if seen else None,
        energy_discharged_kwh=row.energy_discharged_kwh if seen else None,
        soh_start_pct=row.soh_start_pct,
        soh_start_measured_at=row.cycles_start_ts if row.soh_start_pct is not None else None,
        soh_end_pct=row.soh_end_pct,
        soh_end_measured_at=row.cycles_end_ts if row.soh_end_pct is not None else None,
        health_records=row.health_records,
        capacity_records=row.fit_days_n,
        capacity_fade_pct_per_1000_cycles=per_1000,
        capacity_fade_pct_per_year=per_year,
        internal_resistance_increase_pct=resistance_increase_pct(
            row.resistance_first_mohm, row.resistance_end_mohm
        ),
        hours_above_45c=row.seconds_above_45c / 3600.0 if seen else None,
        hours_below_0c=row.seconds_below_0c / 3600.0 if seen else None,
        max_temp_c=row.max_temp_c,
        charging_sessions=row.charging_sessions,
        swaps=row.swaps,
        last_seen_at=row.last_seen_at,
        quarantine_recommended=row.quarantine_recommended,
    )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def soh_histogram(values: Sequence[float]) -> list[HistogramBin]:
    counts: dict[int, int] = defaultdict(int)
    for v in values:
        # 100 % falls in the last bin, not a bin of its own.
        counts[min(int(v // SOH_BIN_PCT), int(100 // SOH_BIN_PCT) - 1)] += 1
    return [
        HistogramBin(lower_pct=i * SOH_BIN_PCT, upper_pct=(i + 1) * SOH_BIN_PCT, batteries=n)
        for i, n in sorted(counts.items())
    ]


def binned_percentiles(points: Sequence[tuple[float, float]], width: float) -> list[SohPercentiles]:
    """points: (x, soh); one entry per non-empty bin of x."""
    bins: dict[int, list[float]] = defaultdict(list)
    for x, soh in points:
        bins[int(x // width)].append(soh)
    out = []
    for i, values in sorted(bins.items()):
        values.sort()
        out.append(
            SohPercentiles(
                bin_lower=i * width,
                bin_upper=(i + 1) * width,
                batteries=len(values),
                soh_p10_pct=percentile(values, 0.1),
                soh_median_pct=percentile(values, 0.5),
                soh_p90_pct=percentile(values, 0.9),
            )
        )
    return out
