"""OEM reports: fleet summary, per-battery rows, battery passport and anomalies.

Every figure comes from the aggregates (app/models/reports.py: battery_monthly for whole
months, battery_daily for edge days and first/last values, a fingerprinted snapshot for the
summary's anomalies and energy) and the registry, never from raw telemetry. Scope: an
OEM key reports on its own program's batteries (battery.oem_id) and gets 404 for any other
battery; an admin reports on the whole fleet or names an OEM; operator keys are refused (403):
performance reports are the OEMs' view, and an operator's custody data is elsewhere.

Anomaly cohorts are the batteries of the same OEM and pack type, so a battery's flags do not
depend on who asks and no OEM's figures shape another OEM's report.
"""

import csv
import io
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import RowMapping
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.batteries.exceptions import BatteryNotFound
from app.core import clock
from app.core.config import get_settings
from app.core.pagination import CursorText, Page, decode_cursor, encode_cursor
from app.models import BatteryState, KeyRole, OrgRole
from app.reports import repository as repo
from app.reports.exceptions import InvalidWindow, ReportsForbidden, UnknownOem, UnknownPackType
from app.reports.schemas import (
    Anomaly,
    BatteryCounts,
    BatteryPassport,
    BatteryReportRow,
    FleetSummary,
    HistogramBin,
    NegativeEvent,
    PassportBattery,
    PassportDurability,
    PassportNegativeEvents,
    PassportPerformance,
    QuarantinedBattery,
    Recommendation,
    ReportWindow,
    SohPercentiles,
    SwapCounts,
)

log = logging.getLogger(__name__)

EARLIEST_DAY = date(2000, 1, 1)
LATEST_DAY = date(2100, 12, 31)
SOH_BIN_PCT = 5.0
CSV_BATCH_ROWS = 1000
DAYS_PER_YEAR = 365.25


# ---------------------------------------------------------------- scope and parameters


@dataclass(frozen=True)
class Scope:
    oem_id: int | None
    oem_code: str | None


def resolve_scope(session: Session, principal: Principal, oem_code: str | None) -> Scope:
    if principal.role is KeyRole.operator:
        raise ReportsForbidden("battery-performance reports are for OEM and admin keys")
    if principal.role is KeyRole.oem:
        if oem_code is not None and oem_code != principal.organization_code:
            raise ReportsForbidden("an OEM key reports only on its own fleet")
        return Scope(principal.organization_id, principal.organization_code)
    if oem_code is None:
        return Scope(None, None)
    org = repo.organization_by_code(session, oem_code)
    if org is None or org["role"] != OrgRole.oem.value:
        raise UnknownOem(f"no OEM organization with code {oem_code!r}")
    return Scope(int(org["id"]), str(org["code"]))


def resolve_window(day_from: date | None, day_to: date | None) -> tuple[date, date]:
    to = day_to or clock.today()
    if not EARLIEST_DAY <= to <= LATEST_DAY:
        raise InvalidWindow(f"to must lie between {EARLIEST_DAY} and {LATEST_DAY}")
    default_days = get_settings().report_window_days
    start = day_from or max(EARLIEST_DAY, to - timedelta(days=default_days - 1))
    if not EARLIEST_DAY <= start <= LATEST_DAY:
        raise InvalidWindow(f"from must lie between {EARLIEST_DAY} and {LATEST_DAY}")
    if start > to:
        raise InvalidWindow(f"from ({start}) is after to ({to})")
    return start, to


def resolve_pack_type(session: Session, code: str | None) -> int | None:
    if code is None:
        return None
    pack_type_id = repo.pack_type_id(session, code)
    if pack_type_id is None:
        raise UnknownPackType(f"no pack type with code {code!r}")
    return pack_type_id


# ---------------------------------------------------------------- figures


def least_squares_slope(n: float, sx: float, sy: float, sxx: float, sxy: float) -> float | None:
    """Slope of y on x from the sums; None below 3 points or when x does not vary."""
    if n < 3:
        return None
    spread = n * sxx - sx * sx
    # Relative guard: the sums of squares are large next to their differences.
    if spread <= 1e-12 * max(1.0, n * sxx):
        return None
    return (n * sxy - sx * sy) / spread


def fade_per_year(row: RowMapping) -> float | None:
    """% of nominal capacity lost per year; positive means fading."""
    per_day = least_squares_slope(
        row["fit_days_n"], row["fit_days_sx"], row["fit_days_sy"],
        row["fit_days_sxx"], row["fit_days_sxy"],
    )  # fmt: skip
    if per_day is None:
        return None
    return -per_day / float(row["nominal_capacity_ah"]) * 100.0 * DAYS_PER_YEAR


def fade_rates(row: RowMapping) -> tuple[float | None, float | None]:
    """(% of nominal capacity lost per 1,000 cycles, per year); positive means fading."""
    per_cycle = least_squares_slope(
        row["fit_cycles_n"], row["fit_cycles_sx"], row["fit_cycles_sy"],
        row["fit_cycles_sxx"], row["fit_cycles_sxy"],
    )  # fmt: skip
    nominal = float(row["nominal_capacity_ah"])
    return (
        None if per_cycle is None else -per_cycle / nominal * 100.0 * 1000.0,
        fade_per_year(row),
    )


def resistance_increase_pct(first: float | None, last: float | None) -> float | None:
    if first is None or last is None or first <= 0:
        return None
    return (last / first - 1.0) * 100.0


def cycles_of(row: RowMapping) -> float | None:
    cycles = row["cycles_end"]
    return float(cycles) if cycles is not None else row["battery_cycles"]


def report_row(row: RowMapping, day_to: date) -> BatteryReportRow:
    per_1000, per_year = fade_rates(row)
    made = row["manufactured_on"]
    return BatteryReportRow(
        serial=row["serial"],
        pack_type_code=row["pack_type_code"],
        oem_code=row["oem_code"],
        state=row["state"],
        age_days=(day_to - made).days if made is not None else None,
        equivalent_full_cycles=cycles_of(row),
        energy_throughput_kwh=row["energy_charged_kwh"],
        energy_discharged_kwh=row["energy_discharged_kwh"],
        soh_start_pct=row["soh_start_pct"],
        soh_end_pct=row["soh_end_pct"],
        capacity_records=row["fit_days_n"],
        capacity_fade_pct_per_1000_cycles=per_1000,
        capacity_fade_pct_per_year=per_year,
        internal_resistance_increase_pct=resistance_increase_pct(
            row["resistance_first_mohm"], row["resistance_end_mohm"]
        ),
        hours_above_45c=row["seconds_above_45c"] / 3600.0,
        hours_below_0c=row["seconds_below_0c"] / 3600.0,
        max_temp_c=row["max_temp_c"],
        charging_sessions=row["charging_sessions"],
        swaps=row["swaps"],
        last_seen_at=row["last_seen_at"],
        quarantine_recommended=row["quarantine_recommended"],
    )


def iter_battery_rows(
    session: Session, query: repo.BatteryQuery, *, batch: int = CSV_BATCH_ROWS
) -> Iterator[RowMapping]:
    """Every battery of the query in serial order, fetched in keyset batches."""
    after: str | None = None
    while True:
        rows = repo.battery_rows(session, query, after=after, limit=batch)
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1]["serial"]


# ---------------------------------------------------------------- statistics


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


def usage_cycles_per_day(row: RowMapping) -> float | None:
    """Equivalent full cycles a day over the window, from its first and last health record."""
    start, end = row.get("cycles_start"), row.get("cycles_end")
    t0, t1 = row.get("cycles_start_ts"), row.get("cycles_end_ts")
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
    row: RowMapping, per_year: float | None, expected_fade: float | None
) -> tuple[float | None, ...]:
    """The battery's figure for each of CHECKS."""
    samples = row["charging_samples"]
    spread = row["temp_spread_sum_c"] / samples if samples else None
    slope = row["imbalance_mv_per_day"] if row["imbalance_days"] >= 3 else None
    ratio = (
        per_year / expected_fade
        if per_year is not None and expected_fade is not None and expected_fade > 0
        else None
    )
    return (
        ratio,
        row["seconds_above_45c"] / 3600.0,
        spread,
        slope * 30.0 if slope is not None else None,
    )


def cohort_values(
    members: Sequence[RowMapping],
) -> tuple[list[float | None], list[tuple[float | None, ...]]]:
    """Each member's fade a year and, per check of CHECKS, every member's figure."""
    per_year = [fade_per_year(row) for row in members]
    usage: dict[str, tuple[float, float]] = {}
    for row, fade in zip(members, per_year, strict=True):
        cycles_a_day = usage_cycles_per_day(row)
        if fade is not None and fade > 0 and cycles_a_day is not None:
            usage[row["serial"]] = (cycles_a_day, fade)
    expected = expected_fade_per_year(usage)
    per_member = [
        battery_values(row, fade, expected.get(row["serial"]))
        for row, fade in zip(members, per_year, strict=True)
    ]
    return per_year, list(zip(*per_member, strict=True))


def find_anomalies(rows: Sequence[RowMapping]) -> list[tuple[RowMapping, Anomaly]]:
    settings = get_settings()
    cohorts: dict[tuple[Any, str], list[RowMapping]] = defaultdict(list)
    for row in rows:
        cohorts[(row["oem_id"], row["pack_type_code"])].append(row)
    found: list[tuple[RowMapping, Anomaly]] = []
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
                            serial=row["serial"],
                            pack_type_code=row["pack_type_code"],
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


# ---------------------------------------------------------------- reports


@dataclass(frozen=True)
class WindowSnapshot:
    anomalies: list[Anomaly]
    energy_charged_kwh: float


def window_snapshot(session: Session, scope: Scope, start: date, end: date) -> WindowSnapshot:
    """The anomalies and energy charged of the window within the scope. Both need every
    battery's window figures (repository.ANOMALY_INPUTS and the cohort fits: 0.3-0.4 s for
    5,000 batteries with a year each), so the fleet-wide result is kept as a snapshot with a
    fingerprint of the data it came from (repository.ANOMALY_FINGERPRINT) and recomputed
    only when the fingerprint changes. A snapshot younger than report_snapshot_max_age_s is
    served without the check: at most that stale, and under live ingest (which changes the
    current month with every batch) one recompute per window per that period, not one per
    summary. Cohorts are per OEM and pack type, so filtering the fleet's list by OEM gives
    the OEM's own."""
    max_age_s = get_settings().report_snapshot_max_age_s
    saved = repo.recent_anomaly_snapshot(session, start, end, max_age_s) if max_age_s else None
    if saved is None:
        fingerprint = repo.anomaly_fingerprint(session, start, end)
        saved = repo.anomaly_snapshot(session, start, end, fingerprint)
    if saved is not None:
        entries, energy = list(saved["anomalies"]), dict(saved["energy_by_oem"])
    else:
        rows = repo.anomaly_inputs(session, start, end)
        entries = [
            {"oem_id": row["oem_id"], **anomaly.model_dump(mode="json")}
            for row, anomaly in find_anomalies(rows)
        ]
        energy = defaultdict(float)
        for row in rows:
            energy[_oem_key(row["oem_id"])] += row["energy_charged_kwh"]
        repo.save_anomaly_snapshot(session, start, end, fingerprint, entries, dict(energy))
    return WindowSnapshot(
        anomalies=[
            Anomaly.model_validate({k: v for k, v in e.items() if k != "oem_id"})
            for e in entries
            if scope.oem_id is None or e["oem_id"] == scope.oem_id
        ],
        energy_charged_kwh=(
            sum(energy.values())
            if scope.oem_id is None
            else energy.get(_oem_key(scope.oem_id), 0.0)
        ),
    )


def _oem_key(oem_id: int | None) -> str:
    return "" if oem_id is None else str(oem_id)


def fleet_summary(
    session: Session,
    principal: Principal,
    *,
    day_from: date | None,
    day_to: date | None,
    oem_code: str | None = None,
    cycle_bin_width: float = 250.0,
    age_bin_days: int = 180,
) -> FleetSummary:
    scope = resolve_scope(session, principal, oem_code)
    start, end = resolve_window(day_from, day_to)

    counts: dict[str, int] = defaultdict(int)
    by_pack: dict[str, int] = defaultdict(int)
    for c in repo.battery_counts(session, scope.oem_id):
        counts[c["state"]] += c["n"]
        by_pack[c["pack_type_code"]] += c["n"]

    # Each battery's latest health record in the window (an index probe each), not its
    # whole window of figures: the summary needs those only for anomalies, kept in snapshots.
    reporting = repo.soh_points(session, scope.oem_id, start, end)
    by_cycles = [
        (cycles, r["soh_end_pct"]) for r in reporting if (cycles := cycles_of(r)) is not None
    ]
    by_age = [
        (float((end - r["manufactured_on"]).days), r["soh_end_pct"])
        for r in reporting
        if r["manufactured_on"] is not None and r["manufactured_on"] <= end
    ]

    snapshot = window_snapshot(session, scope, start, end)
    swaps: dict[str, int] = defaultdict(int)
    rejected_by_reason: dict[str, int] = defaultdict(int)
    for s in repo.swap_counts(session, scope.oem_id, start, end):
        swaps[s["outcome"]] += s["n"]
        if s["outcome"] == "rejected":
            rejected_by_reason[s["reason_code"]] += s["n"]

    return FleetSummary(
        window=ReportWindow(day_from=start, day_to=end, oem_code=scope.oem_code),
        generated_at=clock.now(),
        counts=BatteryCounts(
            total=sum(counts.values()),
            in_service=counts[BatteryState.in_service.value],
            quarantined=counts[BatteryState.quarantined.value],
            retired=counts[BatteryState.retired.value],
            by_pack_type=dict(sorted(by_pack.items())),
        ),
        soh_histogram=soh_histogram([r["soh_end_pct"] for r in reporting]),
        soh_by_cycles=binned_percentiles(by_cycles, cycle_bin_width),
        soh_by_age=binned_percentiles(by_age, float(age_bin_days)),
        cycle_bin_width=cycle_bin_width,
        age_bin_days=age_bin_days,
        batteries_reporting=len(reporting),
        energy_charged_kwh=snapshot.energy_charged_kwh,
        swaps=SwapCounts(
            completed=swaps["completed"],
            rejected=swaps["rejected"],
            aborted=swaps["aborted"],
            rejected_by_reason=dict(sorted(rejected_by_reason.items())),
        ),
        quarantined=[
            QuarantinedBattery(
                serial=q["serial"],
                pack_type_code=q["pack_type_code"],
                soh_pct=q["soh_pct"],
                quarantined_at=q["at"],
                note=q["note"],
            )
            for q in repo.quarantined(session, scope.oem_id)
        ],
        anomalies=snapshot.anomalies,
    )


@dataclass(frozen=True)
class BatteriesReportQuery:
    day_from: date
    day_to: date
    query: repo.BatteryQuery


def batteries_query(
    session: Session,
    principal: Principal,
    *,
    day_from: date | None,
    day_to: date | None,
    oem_code: str | None = None,
    pack_type: str | None = None,
    state: BatteryState | None = None,
    max_soh_pct: float | None = None,
    min_soh_pct: float | None = None,
) -> BatteriesReportQuery:
    """Checks scope and parameters before anything is streamed: a CSV response cannot turn
    into a problem once its first bytes are out."""
    scope = resolve_scope(session, principal, oem_code)
    start, end = resolve_window(day_from, day_to)
    query = repo.BatteryQuery(
        start,
        end,
        oem_id=scope.oem_id,
        pack_type_id=resolve_pack_type(session, pack_type),
        state=state.value if state is not None else None,
        max_soh_pct=max_soh_pct,
        min_soh_pct=min_soh_pct,
    )
    return BatteriesReportQuery(start, end, query)


_SERIAL_CURSOR = TypeAdapter(tuple[CursorText])


def batteries_page(
    session: Session, report: BatteriesReportQuery, *, cursor: str | None, limit: int
) -> Page[BatteryReportRow]:
    values = decode_cursor(cursor, _SERIAL_CURSOR)
    after = None if values is None else values[0]
    rows = repo.battery_rows(session, report.query, after=after, limit=limit + 1)
    items = [report_row(r, report.day_to) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].serial) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


CSV_FIELDS = tuple(BatteryReportRow.model_fields)


def batteries_csv(session: Session, report: BatteriesReportQuery) -> Iterator[str]:
    """The whole report as CSV, one chunk per keyset batch."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for row in iter_battery_rows(session, report.query):
        data = report_row(row, report.day_to).model_dump(mode="json")
        writer.writerow({k: "" if v is None else v for k, v in data.items()})
        n += 1
        if n % CSV_BATCH_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


# ---------------------------------------------------------------- passport

NOT_DERIVABLE = (
    "performance.initial_power_capability_w",
    "performance.remaining_power_capability_w",
    "performance.power_fade_pct",
    "performance.round_trip_efficiency_pct",
    "performance.self_discharge_rate_pct_per_month",
    "negative_events.deep_discharge_events",
    "negative_events.thermal_events",
)


def passport(session: Session, principal: Principal, serial: str) -> BatteryPassport:
    scope = resolve_scope(session, principal, None)
    rows = repo.battery_rows(
        session,
        repo.BatteryQuery(EARLIEST_DAY, LATEST_DAY, oem_id=scope.oem_id, serial=serial),
        after=None,
        limit=1,
    )
    if not rows:
        # Another OEM's battery gets the same answer as a missing one.
        raise BatteryNotFound(f"battery {serial!r} not found")
    row = rows[0]
    per_1000, per_year = fade_rates(row)
    rated_ah = float(row["nominal_capacity_ah"])
    rated_kwh = float(row["nominal_energy_kwh"])
    remaining_ah = row["capacity_last_ah"]
    remaining_kwh = row["capacity_last_kwh"]
    # Only measured values are absent-or-real: nothing is filled in from a model.
    not_derivable = list(NOT_DERIVABLE)
    if remaining_ah is None:
        not_derivable += ["performance.remaining_capacity_ah", "performance.capacity_fade_pct"]
    if remaining_kwh is None:
        not_derivable += [
            "performance.remaining_energy_kwh",
            "performance.state_of_certified_energy_pct",
        ]
    return BatteryPassport(
        generated_at=clock.now(),
        battery=PassportBattery(
            serial=row["serial"],
            pack_type_code=row["pack_type_code"],
            chemistry=row["chemistry"],
            manufactured_on=row["manufactured_on"],
            state=row["state"],
            rated_capacity_ah=rated_ah,
            rated_energy_kwh=rated_kwh,
            nominal_voltage_v=float(row["nominal_voltage_v"]),
        ),
        performance=PassportPerformance(
            remaining_capacity_ah=remaining_ah,
            remaining_capacity_measured_at=row["capacity_last_ts"],
            capacity_fade_pct=(
                100.0 - remaining_ah / rated_ah * 100.0 if remaining_ah is not None else None
            ),
            remaining_energy_kwh=remaining_kwh,
            state_of_certified_energy_pct=(
                remaining_kwh / rated_kwh * 100.0 if remaining_kwh is not None else None
            ),
            state_of_health_pct=(
                row["soh_end_pct"] if row["soh_end_pct"] is not None else row["soh_pct"]
            ),
            capacity_fade_pct_per_1000_cycles=per_1000,
            capacity_fade_pct_per_year=per_year,
            capacity_records=row["fit_days_n"],
            initial_power_capability_w=None,
            remaining_power_capability_w=None,
            power_fade_pct=None,
            internal_resistance_initial_mohm=row["resistance_first_mohm"],
            internal_resistance_current_mohm=row["resistance_end_mohm"],
            internal_resistance_increase_pct=resistance_increase_pct(
                row["resistance_first_mohm"], row["resistance_end_mohm"]
            ),
            round_trip_efficiency_pct=None,
            self_discharge_rate_pct_per_month=None,
        ),
        durability=PassportDurability(
            equivalent_full_cycles=row["battery_cycles"],
            energy_throughput_kwh=row["energy_charged_kwh"],
            energy_discharged_kwh=row["energy_discharged_kwh"],
            capacity_throughput_ah=row["capacity_throughput_ah"],
            time_above_45c_h=row["seconds_above_45c"] / 3600.0,
            time_below_0c_h=row["seconds_below_0c"] / 3600.0,
            max_temp_c=row["max_temp_c"],
            first_seen_on=row["first_day"],
            last_seen_at=row["last_seen_at"],
        ),
        negative_events=PassportNegativeEvents(
            quarantines=[
                NegativeEvent(kind="quarantine", at=e["at"], note=e["note"])
                for e in repo.quarantine_events(session, row["id"])
            ],
            swaps_refused_for_health=row["health_rejections"],
            deep_discharge_events=None,
            thermal_events=None,
        ),
        quarantine_recommendations=[
            Recommendation.model_validate(dict(r))
            for r in repo.open_recommendations(session, row["id"])
        ],
        not_derivable=not_derivable,
    )


# ---------------------------------------------------------------- recommendations


def refresh_recommendations(session: Session, *, day_from: date, day_to: date) -> int:
    """Detects anomalies over the whole fleet and records each as an open quarantine
    recommendation (updating an open one of the same kind). Nothing is quarantined: an
    operator decides. Returns the number of anomalies recorded."""
    found = find_anomalies(repo.anomaly_inputs(session, day_from, day_to))
    for row, anomaly in found:
        repo.upsert_recommendation(
            session,
            {
                "battery_id": row["id"],
                "kind": anomaly.kind,
                "reason": anomaly.reason,
                "value": anomaly.value,
                "cohort_median": anomaly.cohort_median,
                "robust_z": anomaly.robust_z,
                "window_from": day_from,
                "window_to": day_to,
            },
        )
    log.info("event=recommendations_refreshed anomalies=%d", len(found))
    return len(found)
