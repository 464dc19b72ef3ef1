"""A battery's figures from its window sums (fade rates, resistance growth, cycles), and the
fleet's distributions of them (percentiles, histograms)."""

import functools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from statistics import NormalDist

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


# The least evidence a fade rate is given for; below it the rate is null and the reason is
# stated (README, "Fade rates and their uncertainty"). 8 records leave 6 degrees of freedom
# for the residual variance (the t quantile below is exact to 0.3 % from there at
# FADE_CONFIDENCE). The spreads are the standard deviation of x, which sets the slope's
# precision with the noise: 10 days is a
# span of about 35 days of evenly spread records, 5 cycles a spread of about 17 cycles. With
# the 0.4 % noise of a coulomb-counted full charge, fewer days gives a yearly rate whose
# interval is wider than any fade a pack can have; fewer cycles gives a per-cycle rate that
# whole-number cycle counts bias by several per cent (a spread of 5 cycles printed 35.8 % per
# 1,000 cycles against 255.7 true, issue 14).
MIN_FIT_RECORDS = 8
MIN_FIT_DAYS_SD = 10.0
MIN_FIT_CYCLES_SD = 5.0
# The two-sided confidence of a fade rate's interval. An OEM reads a fleet's rates at once
# and acts on any of them: the intervals must hold for the whole table, not for each battery
# alone. By Bonferroni, a table of N rates holds as a whole with probability at least
# 1 - N (1 - FADE_CONFIDENCE): at 99.99 %, 95 % for up to 500 rates. (At 99.9 %, a run of
# the size, 190 rates, has about one chance in six of a miss; one such run missed one
# rate by 3.6 standard errors. The standard errors themselves are right: the errors of
# about 380 rates, in standard errors, are spread as Student's t says; docs/benchmarks.md.)
FADE_CONFIDENCE = 0.9999


@dataclass(frozen=True)
class LineFit:
    """A least-squares line from its sums, with the slope's standard error."""

    n: int
    slope: float
    slope_se: float
    x_sd: float

    def interval(self, confidence: float) -> tuple[float, float]:
        half = t_quantile(0.5 + confidence / 2.0, self.n - 2) * self.slope_se
        return self.slope - half, self.slope + half


@functools.cache
def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile by its Cornish-Fisher expansion around the normal one
    (Abramowitz and Stegun 26.7.5): at p = 0.99995 (FADE_CONFIDENCE), 0.8 % short of the
    exact value at 6 degrees of freedom (MIN_FIT_RECORDS), 0.23 % at 8 and 0.01 % from 20;
    within 0.3 % at p = 0.995 from 4."""
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4.0
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0
    v = float(dof)
    return z + g1 / v + g2 / v**2 + g3 / v**3 + g4 / v**4


def line_fit(n: int, sx: float, sy: float, sxx: float, sxy: float, syy: float) -> LineFit | None:
    """None below 3 points or when x does not vary (as least_squares_slope)."""
    slope = least_squares_slope(n, sx, sy, sxx, sxy)
    if slope is None:
        return None
    cxx = sxx - sx * sx / n
    cxy = sxy - sx * sy / n
    cyy = syy - sy * sy / n
    # Rounding can leave a perfect line's residual sum a hair below zero.
    residual = max(0.0, cyy - slope * cxy)
    se = math.sqrt(residual / (n - 2) / cxx) if n > 2 else math.inf
    return LineFit(n=n, slope=slope, slope_se=se, x_sd=math.sqrt(max(0.0, cxx) / n))


@dataclass(frozen=True)
class FadeRate:
    """A fade rate (positive means fading) with its confidence interval, or null with the
    reason."""

    value: float | None
    low: float | None = None
    high: float | None = None
    reason: str | None = None

    @property
    def half_width(self) -> float | None:
        if self.value is None or self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2.0


def _fade(fit: LineFit | None, n: int, scale: float, x_name: str, min_sd: float) -> FadeRate:
    """scale: from the slope (Ah per x) to % of nominal lost per unit; negative."""
    if n < MIN_FIT_RECORDS:
        return FadeRate(None, reason=f"{n} capacity records, {MIN_FIT_RECORDS} needed")
    if fit is None or fit.x_sd < min_sd:
        sd = 0.0 if fit is None else fit.x_sd
        return FadeRate(
            None,
            reason=f"capacity records spread over {sd:.1f} {x_name} (standard deviation),"
            f" {min_sd:g} needed",
        )
    low, high = fit.interval(FADE_CONFIDENCE)
    return FadeRate(fit.slope * scale, low=high * scale, high=low * scale)


def days_fit(row: CohortInputs) -> LineFit | None:
    return line_fit(
        row.fit_days_n, row.fit_days_sx, row.fit_days_sy, row.fit_days_sxx,
        row.fit_days_sxy, row.fit_days_syy,
    )  # fmt: skip


def fade_per_year_rate(row: CohortInputs) -> FadeRate:
    """% of nominal capacity lost per year."""
    scale = -100.0 * DAYS_PER_YEAR / float(row.nominal_capacity_ah)
    return _fade(days_fit(row), row.fit_days_n, scale, "days", MIN_FIT_DAYS_SD)


def fade_per_year(row: CohortInputs) -> float | None:
    return fade_per_year_rate(row).value


def fade_rates(row: BatteryWindow) -> tuple[FadeRate, FadeRate]:
    """(% of nominal capacity lost per 1,000 cycles, per year)."""
    fit = line_fit(
        row.fit_cycles_n, row.fit_cycles_sx, row.fit_cycles_sy,
        row.fit_cycles_sxx, row.fit_cycles_sxy, row.fit_cycles_syy,
    )  # fmt: skip
    scale = -100.0 * 1000.0 / float(row.nominal_capacity_ah)
    per_1000 = _fade(fit, row.fit_cycles_n, scale, "cycles", MIN_FIT_CYCLES_SD)
    return per_1000, fade_per_year_rate(row)


def resistance_increase_pct(first: float | None, last: float | None) -> float | None:
    if first is None or last is None or first <= 0:
        return None
    return (last / first - 1.0) * 100.0


def cycles_of(row: BatteryWindow | SohPoint) -> float | None:
    cycles = row.cycles_end
    return float(cycles) if cycles is not None else row.battery_cycles


def fade_not_derivable(per_1000: FadeRate, per_year: FadeRate, prefix: str = "") -> dict[str, str]:
    """The fade rates that are null, by field name (after prefix), with the reason."""
    return {
        f"{prefix}{name}": rate.reason
        for name, rate in (
            ("capacity_fade_pct_per_1000_cycles", per_1000),
            ("capacity_fade_pct_per_year", per_year),
        )
        if rate.reason is not None
    }


def report_row(row: BatteryWindow, day_to: date, recommended: bool) -> BatteryReportRow:
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
        capacity_fade_pct_per_1000_cycles=per_1000.value,
        capacity_fade_pct_per_1000_cycles_low=per_1000.low,
        capacity_fade_pct_per_1000_cycles_high=per_1000.high,
        capacity_fade_pct_per_year=per_year.value,
        capacity_fade_pct_per_year_low=per_year.low,
        capacity_fade_pct_per_year_high=per_year.high,
        internal_resistance_increase_pct=resistance_increase_pct(
            row.resistance_first_mohm, row.resistance_end_mohm
        ),
        hours_above_45c=row.seconds_above_45c / 3600.0 if seen else None,
        hours_below_0c=row.seconds_below_0c / 3600.0 if seen else None,
        max_temp_c=row.max_temp_c,
        charging_sessions=row.charging_sessions,
        swaps=row.swaps,
        last_seen_at=row.last_seen_at,
        quarantine_recommended=recommended,
        not_derivable=fade_not_derivable(per_1000, per_year),
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
