"""Anomalies: batteries far from their cohort, the batteries of the same OEM and pack type, so
that a battery's flags do not depend on who asks and no OEM's figures shape another OEM's report.
Each check compares one figure with the cohort's by a robust z-score, and every anomaly says
what it rests on (evidence) and, where the figure is a fit, its confidence interval.

Fading is judged from capacity and SoH together (issue 14): the window's capacity fit against
the cohort at the same usage, and the battery's whole life, SoH lost for its age, which needs
no capacity record at all. A battery below the SoH floor is always reported."""

import bisect
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TypeVar

from app.core.config import get_settings
from app.reports.figures import (
    FadeRate,
    fade_per_year_rate,
    least_squares_slope,
    line_fit,
    t_quantile,
)
from app.reports.rows import CohortInputs
from app.reports.schemas import Anomaly
from app.rollups.rules import FIT_EPOCH

# The anomaly inputs, or the batteries report's rows (which carry the same figures).
CohortT = TypeVar("CohortT", bound=CohortInputs)

FAST_FADE = "fast_fade"
BELOW_SOH_FLOOR = "below_soh_floor"
IMBALANCE = "cell_imbalance"
# A window's fade must be at least this many times the cohort's at the same usage, and the
# lower end of its interval above the cohort's: a fast fade the noise could explain is none.
FAST_FADE_RATIO = 1.5
# Lifetime fading: SoH lost per square root of age (calendar ageing goes with the square root
# of time, so packs of different ages compare), against the cohort's. Packs younger than
# LIFETIME_MIN_AGE_DAYS are left out: their few points of loss are within the spread of new
# packs' capacity (a new pack ships up to a few per cent above nominal).
LIFETIME_RATIO = 2.0
LIFETIME_MIN_AGE_DAYS = 90.0
# In a cohort of 3 or 4 (an OEM with few packs of a type), either fading figure must reach
# this ratio: the fast-fading packs the simulator plants age 2.8-5.2 x their siblings.
SMALL_COHORT_FADE_RATIO = 2.5


@dataclass(frozen=True)
class Check:
    kind: str
    # A MAD below this is treated as this: a cohort that agrees closely must not turn a
    # small difference into a large z.
    mad_floor: float
    # Below this the battery is not flagged however its cohort looks.
    minimum: float
    reason: str
    # In a cohort too small for the statistics alone (3 to report_anomaly_min_cohort - 1
    # batteries), a battery is flagged only if it also reaches this engineering limit (None:
    # such a cohort gives no verdict).
    limit: float | None = None


@dataclass(frozen=True)
class Figure:
    """A battery's figure for a check (higher is worse), its interval when it has one, and
    what it rests on."""

    value: float
    evidence: str
    low: float | None = None
    high: float | None = None
    # The battery's own rate behind a ratio, for the reason's text.
    detail: str = ""
    # False: counted in the cohort's distribution, never flagged.
    flaggable: bool = True


CHECKS = (
    Check(
        FAST_FADE,
        0.1,
        FAST_FADE_RATIO,
        "capacity fades {value:.1f} x the rest of its cohort's rate at the same usage",
        limit=SMALL_COHORT_FADE_RATIO,
    ),
    Check(
        "fast_fade_lifetime",
        0.1,
        LIFETIME_RATIO,
        "SoH lost for its age {value:.1f} x the cohort's",
        limit=SMALL_COHORT_FADE_RATIO,
    ),
    Check("running_hot", 0.25, 1.0, "{value:.1f} h above 45 °C", limit=10.0),
    Check(
        "hot_cell",
        0.2,
        1.0,
        "hottest cell {value:.1f} °C above the coldest while charging, on average",
        limit=5.0,
    ),
    Check(
        IMBALANCE,
        0.5,
        2.0,
        "cell voltage spread grows {value:.1f} mV per 30 days",
        limit=10.0,
    ),
)
# Both fading checks report as fast_fade: one finding, two kinds of evidence.
REPORTED_KIND = {"fast_fade_lifetime": FAST_FADE}


def usage_cycles_per_day(row: CohortInputs) -> float | None:
    """Equivalent full cycles a day over the window, from its first and last health record."""
    start, end = row.cycles_start, row.cycles_end
    t0, t1 = row.cycles_start_ts, row.cycles_end_ts
    if start is None or end is None or t0 is None or t1 is None:
        return None
    span_days = (t1 - t0).total_seconds() / 86400.0
    return (end - start) / span_days if span_days >= 1.0 else None


# n, sum x, sum y, sum x^2, sum xy, sum y^2
Sums = tuple[int, float, float, float, float, float]
# A cohort's fade depends on usage only if its own data show it: the slope of the line must
# clear zero at this two-sided confidence (issue 15).
USAGE_SLOPE_CONFIDENCE = 0.95


def _sums(points: Iterable[tuple[float, float]]) -> Sums:
    n, sx, sy, sxx, sxy, syy = 0, 0.0, 0.0, 0.0, 0.0, 0.0
    for x, y in points:
        n, sx, sy, sxx, sxy, syy = n + 1, sx + x, sy + y, sxx + x * x, sxy + x * y, syy + y * y
    return n, sx, sy, sxx, sxy, syy


def _without(sums: Sums, point: tuple[float, float]) -> Sums:
    n, sx, sy, sxx, sxy, syy = sums
    x, y = point
    return n - 1, sx - x, sy - y, sxx - x * x, sxy - x * y, syy - y * y


def _line(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    n, sx, sy, sxx, sxy, _ = _sums(points)
    b = least_squares_slope(n, sx, sy, sxx, sxy)
    if b is None:
        return None
    return (sy - b * sx) / n, b


def _usage_line(sums: Sums) -> tuple[float, float] | None:
    """The line of fade against usage over these sums, when its slope clears zero."""
    n, sx, sy, _, _, _ = sums
    fit = line_fit(*sums)
    if fit is None:
        return None
    t = t_quantile(0.5 + USAGE_SLOPE_CONFIDENCE / 2.0, n - 2)
    if abs(fit.slope) <= t * fit.slope_se:
        return None
    return (sy - fit.slope * sx) / n, fit.slope


def _median_without(ordered: Sequence[float], value: float | None) -> float | None:
    """The median of `ordered` (sorted) without one occurrence of `value` (None: none)."""
    if value is None:
        return statistics.median(ordered) if ordered else None
    i = bisect.bisect_left(ordered, value)
    m = len(ordered) - 1
    if m == 0:
        return None

    def at(k: int) -> float:
        return ordered[k] if k < i else ordered[k + 1]

    return at(m // 2) if m % 2 else (at(m // 2 - 1) + at(m // 2)) / 2.0


def _inliers(points: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """The points within 3 robust deviations of the least-squares line over all of them."""
    line = _line(list(points.values())) if len(points) >= 3 else None
    if line is None:
        return points
    residuals = {s: y - (line[0] + line[1] * x) for s, (x, y) in points.items()}
    mad = statistics.median(abs(r) for r in residuals.values())
    inliers = {s: points[s] for s, r in residuals.items() if abs(r) <= 3.0 * 1.4826 * mad}
    return inliers if mad > 0 and len(inliers) >= 3 else points


def expected_fade_per_year(points: dict[str, tuple[float, float]]) -> dict[str, float]:
    """serial -> the fade a year the rest of the cohort shows at that battery's usage.

    Capacity fades with time (calendar ageing) and with use (cycling), so a battery that
    cycles little fades more per cycle and less per year than a busy one. The cohort, without
    the points more than 3 robust deviations off its least-squares line of fade a year against
    cycles a day, gives each battery its expected fade; a battery fading several times that is
    fading fast for its use, whatever its use.

    Issue 15: each battery is judged against the rest of the cohort, never against a fit that
    includes itself (leave one out), and the rest's line only where its slope clears zero
    (USAGE_SLOPE_CONFIDENCE); otherwise the rest's median. A line of 4 or 5 packs over a
    narrow range of usage has a slope of noise: with a fast-fading pack and an imbalanced one
    among them, it made the fast one read 1.5 x "expected", against 2.4 x its healthy
    siblings' median.

    The line is never read beyond the usage the rest of the cohort covers: a battery at the
    edge gets the line's value at the nearest usage another battery has (a line extrapolated
    toward zero fade made two slow-fading low-use packs look 2 x fast, issue 14).
    points: serial -> (cycles a day, fade % a year)."""
    if not points:
        return {}
    median_fade = statistics.median(y for _, y in points.values())
    kept = _inliers(points)
    sums = _sums(kept.values())
    ordered = sorted(y for _, y in kept.values())
    usages = sorted((x, s) for s, (x, _) in kept.items())
    out: dict[str, float] = {}
    for serial, (x, _) in points.items():
        own = kept.get(serial)
        rest = sums if own is None else _without(sums, own)
        line = _usage_line(rest)
        # The range of the other batteries' usage: without this battery's own end of it.
        ends = [u for u in (usages[:2] + usages[-2:]) if u[1] != serial]
        if line is not None and ends:
            lo, hi = min(ends)[0], max(ends)[0]
            expected = line[0] + line[1] * min(max(x, lo), hi)
        else:
            median_rest = _median_without(ordered, None if own is None else own[1])
            expected = median_fade if median_rest is None else median_rest
        # A line can dip toward zero at the edge of the cohort's usage: never divide by that.
        out[serial] = max(expected, 0.25 * median_fade)
    return out


def age_at_records_days(row: CohortInputs) -> float | None:
    """The battery's age at the mean date of its capacity records."""
    if row.manufactured_on is None or row.fit_days_n == 0:
        return None
    mean_at = FIT_EPOCH + timedelta(days=row.fit_days_sx / row.fit_days_n)
    return (mean_at.date() - row.manufactured_on).days + 0.5


def ageing_constant(rate: FadeRate, row: CohortInputs) -> FadeRate:
    """A window's fade a year as the constant k of loss = k sqrt(age in years), the same
    unit as the lifetime check's (loss falls off with age: a young pack fades faster a year
    than its older siblings, by the square root of their ages, without any fault). Null
    without a manufacturing date or a month of age."""
    age_days = age_at_records_days(row)
    if rate.value is None or age_days is None or age_days < 30.0:
        return FadeRate(None)
    factor = 2.0 * math.sqrt(age_days / 365.25)
    return FadeRate(
        rate.value * factor,
        low=None if rate.low is None else rate.low * factor,
        high=None if rate.high is None else rate.high * factor,
    )


def window_fade_figure(
    rate: FadeRate,
    k: FadeRate,
    expected: float | None,
    cohort_median: float | None,
    row: CohortInputs,
) -> Figure | None:
    """The window's fade, as an ageing constant, against the cohort's at the same usage,
    with the ratio's interval. A battery ageing slower than the cohort's median is not fast,
    whatever a line says at its usage."""
    if k.value is None or expected is None or expected <= 0 or cohort_median is None:
        return None
    low = k.low / expected if k.low is not None else None
    high = k.high / expected if k.high is not None else None
    return Figure(
        k.value / expected,
        f"{row.fit_days_n} capacity records",
        low=low,
        high=high,
        detail=f" ({rate.value:.2f} % per year, {rate.low:.2f} to {rate.high:.2f},"
        f" at {age_at_records_days(row):.0f} days of age)",
        # Not fast when its interval reaches the cohort's rate at its usage (the noise could
        # explain it), nor when it ages slower than the cohort's median.
        flaggable=(low is None or low > 1.0) and k.value > cohort_median,
    )


def soh_now(row: CohortInputs) -> float | None:
    return row.soh_end_pct if row.soh_end_pct is not None else row.soh_pct


def lifetime_ageing(row: CohortInputs, day_to: date) -> tuple[float, float] | None:
    """(SoH lost per square root of a year of age, age in days) at the latest SoH."""
    soh = soh_now(row)
    made = row.manufactured_on
    if soh is None or made is None:
        return None
    at = row.cycles_end_ts.date() if row.soh_end_pct is not None and row.cycles_end_ts else day_to
    age_days = float((at - made).days)
    if age_days < LIFETIME_MIN_AGE_DAYS:
        return None
    return max(0.0, 100.0 - soh) / math.sqrt(age_days / 365.25), age_days


def cohort_figures(members: Sequence[CohortT], day_to: date) -> list[list[Figure | None]]:
    """Per check of CHECKS, every member's figure."""
    rates = [fade_per_year_rate(row) for row in members]
    constants = [ageing_constant(rate, row) for row, rate in zip(members, rates, strict=True)]
    usage: dict[str, tuple[float, float]] = {}
    for row, k in zip(members, constants, strict=True):
        cycles_a_day = usage_cycles_per_day(row)
        if k.value is not None and k.value > 0 and cycles_a_day is not None:
            usage[row.serial] = (cycles_a_day, k.value)
    expected = expected_fade_per_year(usage)
    median_k = statistics.median(y for _, y in usage.values()) if usage else None
    window = [
        window_fade_figure(rate, k, expected.get(row.serial), median_k, row)
        for row, rate, k in zip(members, rates, constants, strict=True)
    ]
    ageing = [lifetime_ageing(row, day_to) for row in members]
    known = [a[0] for a in ageing if a is not None]
    typical = statistics.median(known) if known else 0.0
    lifetime = [
        None
        if a is None or typical <= 0
        else Figure(
            a[0] / typical,
            f"SoH {soh_now(row):.1f} % at {a[1]:.0f} days of age",
            detail=f" ({a[0]:.1f} points per square root of a year)",
        )
        for row, a in zip(members, ageing, strict=True)
    ]
    return [window, lifetime, *[list(col) for col in zip(*map(_plain, members), strict=True)]]


def _plain(row: CohortInputs) -> tuple[Figure | None, ...]:
    """The battery's figures for the checks that are not fits: running hot, hot cell,
    imbalance."""
    samples = row.charging_samples
    spread = row.temp_spread_sum_c / samples if samples else None
    slope = row.imbalance_mv_per_day if row.imbalance_days >= 3 else None
    return (
        Figure(row.seconds_above_45c / 3600.0, f"{samples} charging samples"),
        None if spread is None else Figure(spread, f"{samples} charging samples"),
        None
        if slope is None
        else Figure(slope * 30.0, f"{row.imbalance_days} days of cell voltages"),
    )


def find_anomalies(rows: Sequence[CohortT], day_to: date) -> list[tuple[CohortT, Anomaly]]:
    settings = get_settings()
    cohorts: dict[tuple[int | None, str], list[CohortT]] = defaultdict(list)
    for row in rows:
        cohorts[(row.oem_id, row.pack_type_code)].append(row)
    found: dict[tuple[str, str], tuple[CohortT, Anomaly]] = {}
    for members in cohorts.values():
        for check, figures in zip(CHECKS, cohort_figures(members, day_to), strict=True):
            for row, anomaly in _judge(check, members, figures, settings.report_anomaly_z,
                                       settings.report_anomaly_min_cohort):  # fmt: skip
                key = (row.serial, anomaly.kind)
                # Two kinds of fading evidence: the more certain (higher z) one stands.
                if key not in found or (anomaly.robust_z or 0) > (found[key][1].robust_z or 0):
                    found[key] = (row, anomaly)
        found.update(((row.serial, BELOW_SOH_FLOOR), (row, a)) for row, a in _below_floor(members))
    _attribute_fading_to_imbalance(found)
    return sorted(
        found.values(),
        key=lambda pair: (-(pair[1].robust_z or math.inf), pair[1].serial, pair[1].kind),
    )


def _attribute_fading_to_imbalance(found: dict[tuple[str, str], tuple[CohortT, Anomaly]]) -> None:
    """A pack whose cell voltages drift apart loses capacity with them (its weakest cell
    reaches its cut-off first): its fading is the imbalance's symptom, reported once, under
    its cause, so that fast_fade names packs whose cells age fast."""
    for serial, kind in list(found):
        if kind != FAST_FADE or (serial, IMBALANCE) not in found:
            continue
        _, fading = found.pop((serial, FAST_FADE))
        row, imbalance = found[(serial, IMBALANCE)]
        found[(serial, IMBALANCE)] = (
            row,
            imbalance.model_copy(update={"reason": f"{imbalance.reason}; and {fading.reason}"}),
        )


def _judge(
    check: Check,
    members: Sequence[CohortT],
    figures: Sequence[Figure | None],
    z_threshold: float,
    min_cohort: int,
) -> list[tuple[CohortT, Anomaly]]:
    known = [f.value for f in figures if f is not None]
    small = len(known) < min_cohort
    # Fewer than three batteries are no cohort at all.
    if not known or (small and (check.limit is None or len(known) < 3)):
        return []
    median = statistics.median(known)
    mad = statistics.median(abs(v - median) for v in known)
    scale = max(mad, check.mad_floor)
    out: list[tuple[CohortT, Anomaly]] = []
    for row, figure in zip(members, figures, strict=True):
        if figure is None or not figure.flaggable or figure.value < check.minimum:
            continue
        z = 0.6745 * (figure.value - median) / scale
        if z <= z_threshold or (small and figure.value < (check.limit or math.inf)):
            continue
        reason = check.reason.format(value=figure.value) + figure.detail
        out.append(
            (
                row,
                Anomaly(
                    serial=row.serial,
                    pack_type_code=row.pack_type_code,
                    kind=REPORTED_KIND.get(check.kind, check.kind),
                    reason=f"{reason}; cohort median {median:.2f}",
                    value=figure.value,
                    value_low=figure.low,
                    value_high=figure.high,
                    evidence=figure.evidence,
                    cohort_median=median,
                    robust_z=z,
                    cohort_size=len(known),
                ),
            )
        )
    return out


def _below_floor(members: Sequence[CohortT]) -> list[tuple[CohortT, Anomaly]]:
    """Every battery whose latest SoH is below the swap floor: no cohort needed, and no
    statistics either (the floor is the fleet's rule)."""
    floor = get_settings().swap_min_soh_pct
    known = [s for row in members if (s := soh_now(row)) is not None]
    median = statistics.median(known) if known else 0.0
    out = []
    for row in members:
        soh = soh_now(row)
        if soh is None or soh >= floor:
            continue
        source = "latest health record" if row.soh_end_pct is not None else "registry"
        out.append(
            (
                row,
                Anomaly(
                    serial=row.serial,
                    pack_type_code=row.pack_type_code,
                    kind=BELOW_SOH_FLOOR,
                    reason=f"SoH {soh:.1f} % is below the {floor:g} % floor ({source})",
                    value=soh,
                    value_low=None,
                    value_high=None,
                    evidence=source,
                    cohort_median=median if known else soh,
                    robust_z=None,
                    cohort_size=len(known),
                ),
            )
        )
    return out
