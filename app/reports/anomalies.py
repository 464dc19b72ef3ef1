"""Anomalies: batteries far from their cohort, the batteries of the same OEM and pack type, so
that a battery's flags do not depend on who asks and no OEM's figures shape another OEM's report.
Each check compares one figure with the cohort's by a robust z-score."""

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from app.core.config import get_settings
from app.reports.figures import fade_per_year, least_squares_slope
from app.reports.rows import CohortInputs
from app.reports.schemas import Anomaly

# The anomaly inputs, or the batteries report's rows (which carry the same figures).
CohortT = TypeVar("CohortT", bound=CohortInputs)


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


# In the order of battery_values' figures. Each figure: higher is worse; None when the
# battery has no such figure.
CHECKS = (
    Check(
        "fast_fade", 0.1, 1.5, "capacity fades {value:.1f} x the cohort's rate at the same usage"
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
        "cell_imbalance",
        0.5,
        2.0,
        "cell voltage spread grows {value:.1f} mV per 30 days",
        limit=10.0,
    ),
)


def usage_cycles_per_day(row: CohortInputs) -> float | None:
    """Equivalent full cycles a day over the window, from its first and last health record."""
    start, end = row.cycles_start, row.cycles_end
    t0, t1 = row.cycles_start_ts, row.cycles_end_ts
    if start is None or end is None or t0 is None or t1 is None:
        return None
    span_days = (t1 - t0).total_seconds() / 86400.0
    return (end - start) / span_days if span_days >= 1.0 else None


def _line(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    n = len(points)
    sx = sum(x for x, _ in points)
    sy = sum(y for _, y in points)
    sxx = sum(x * x for x, _ in points)
    sxy = sum(x * y for x, y in points)
    b = least_squares_slope(n, sx, sy, sxx, sxy)
    if b is None:
        return None
    return (sy - b * sx) / n, b


def expected_fade_per_year(points: dict[str, tuple[float, float]]) -> dict[str, float]:
    """serial -> the fade a year the cohort shows at that battery's usage.

    Capacity fades with time (calendar ageing) and with use (cycling), so a battery that
    cycles little fades more per cycle and less per year than a busy one. A straight line of
    fade a year against cycles a day, fitted over the cohort once, refitted without the
    points more than 3 robust deviations off it, gives each battery its expected fade; a
    battery fading several times that is fading fast for its use, whatever its use.
    points: serial -> (cycles a day, fade % a year)."""
    if not points:
        return {}
    median_fade = statistics.median(y for _, y in points.values())
    line = _line(list(points.values())) if len(points) >= 3 else None
    if line is not None:
        residuals = {s: y - (line[0] + line[1] * x) for s, (x, y) in points.items()}
        mad = statistics.median(abs(r) for r in residuals.values())
        kept = [points[s] for s, r in residuals.items() if abs(r) <= 3.0 * 1.4826 * mad]
        if mad > 0 and len(kept) >= 3:
            line = _line(kept) or line
    out: dict[str, float] = {}
    for serial, (x, _) in points.items():
        expected = line[0] + line[1] * x if line is not None else median_fade
        # A line can dip toward zero at the edge of the cohort's usage: never divide by that.
        out[serial] = max(expected, 0.25 * median_fade)
    return out


def battery_values(
    row: CohortInputs, per_year: float | None, expected_fade: float | None
) -> tuple[float | None, ...]:
    """The battery's figure for each of CHECKS."""
    samples = row.charging_samples
    spread = row.temp_spread_sum_c / samples if samples else None
    slope = row.imbalance_mv_per_day if row.imbalance_days >= 3 else None
    ratio = (
        per_year / expected_fade
        if per_year is not None and expected_fade is not None and expected_fade > 0
        else None
    )
    return (
        ratio,
        row.seconds_above_45c / 3600.0,
        spread,
        slope * 30.0 if slope is not None else None,
    )


def cohort_values(
    members: Sequence[CohortT],
) -> tuple[list[float | None], list[tuple[float | None, ...]]]:
    """Each member's fade a year and, per check of CHECKS, every member's figure."""
    per_year = [fade_per_year(row) for row in members]
    usage: dict[str, tuple[float, float]] = {}
    for row, fade in zip(members, per_year, strict=True):
        cycles_a_day = usage_cycles_per_day(row)
        if fade is not None and fade > 0 and cycles_a_day is not None:
            usage[row.serial] = (cycles_a_day, fade)
    expected = expected_fade_per_year(usage)
    per_member = [
        battery_values(row, fade, expected.get(row.serial))
        for row, fade in zip(members, per_year, strict=True)
    ]
    return per_year, list(zip(*per_member, strict=True))


def find_anomalies(rows: Sequence[CohortT]) -> list[tuple[CohortT, Anomaly]]:
    settings = get_settings()
    cohorts: dict[tuple[int | None, str], list[CohortT]] = defaultdict(list)
    for row in rows:
        cohorts[(row.oem_id, row.pack_type_code)].append(row)
    found: list[tuple[CohortT, Anomaly]] = []
    for members in cohorts.values():
        per_year, by_check = cohort_values(members)
        for check, values in zip(CHECKS, by_check, strict=True):
            known = [v for v in values if v is not None]
            if not known:
                continue
            small = len(known) < settings.report_anomaly_min_cohort
            # Fewer than three batteries are no cohort at all.
            if small and (check.limit is None or len(known) < 3):
                continue
            median = statistics.median(known)
            mad = statistics.median(abs(v - median) for v in known)
            scale = max(mad, check.mad_floor)
            for row, fade, value in zip(members, per_year, values, strict=True):
                if value is None or value < check.minimum:
                    continue
                z = 0.6745 * (value - median) / scale
                if z <= settings.report_anomaly_z:
                    continue
                if small and value < (check.limit or math.inf):
                    continue
                reason = check.reason.format(value=value)
                if check.kind == "fast_fade" and fade is not None:
                    reason += f" ({fade:.2f} % per year)"
                found.append(
                    (
                        row,
                        Anomaly(
                            serial=row.serial,
                            pack_type_code=row.pack_type_code,
                            kind=check.kind,
                            reason=f"{reason}; cohort median {median:.2f}",
                            value=value,
                            cohort_median=median,
                            robust_z=z,
                            cohort_size=len(known),
                        ),
                    )
                )
    found.sort(key=lambda pair: (-pair[1].robust_z, pair[1].serial))
    return found
