"""OEM reports: the fleet summary, the batteries report (pages, and the rows its CSV streams)
and the quarantine recommendations `swapfleet detect-anomalies` records (the reports compute
theirs when read, from the window's anomaly snapshot).

Every figure comes from the aggregates (app/models/reports.py: battery_monthly for whole
months, battery_daily for edge days and first/last values, a fingerprinted snapshot for the
summary's anomalies and energy) and the registry, never from raw telemetry. Who may see what
is in scope.py, the figures in figures.py and anomalies.py, the snapshot in snapshots.py, the
passport in passport.py, and the CSV and HTML renderings in render/.
"""

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.core import clock
from app.core.pagination import CursorText, Page, decode_cursor, page_of
from app.models import BatteryState
from app.reports import repository as repo
from app.reports.anomalies import find_anomalies
from app.reports.figures import binned_percentiles, cycles_of, report_row, soh_histogram
from app.reports.rows import BatteryWindow
from app.reports.schemas import (
    BatteryCounts,
    BatteryReportRow,
    FleetSummary,
    QuarantinedBattery,
    ReportWindow,
    SwapCounts,
)
from app.reports.scope import resolve_pack_type, resolve_scope, resolve_window
from app.reports.snapshots import window_snapshot

log = logging.getLogger(__name__)

CSV_BATCH_ROWS = 1000


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
        counts[c.state] += c.n
        by_pack[c.pack_type_code] += c.n

    # Each battery's latest health record in the window (an index probe each), not its
    # whole window of figures: the summary needs those only for anomalies, kept in snapshots.
    reporting = repo.soh_points(session, scope.oem_id, start, end)
    by_cycles = [(cycles, r.soh_end_pct) for r in reporting if (cycles := cycles_of(r)) is not None]
    by_age = [
        (float((end - r.manufactured_on).days), r.soh_end_pct)
        for r in reporting
        if r.manufactured_on is not None and r.manufactured_on <= end
    ]

    snapshot = window_snapshot(session, scope, start, end)
    swaps: dict[str, int] = defaultdict(int)
    rejected_by_reason: dict[str, int] = defaultdict(int)
    for s in repo.swap_counts(session, scope.oem_id, start, end):
        swaps[s.outcome] += int(s.n)
        if s.outcome == "rejected":
            rejected_by_reason[s.reason_code] += int(s.n)

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
        soh_histogram=soh_histogram([r.soh_end_pct for r in reporting]),
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
                serial=q.serial,
                pack_type_code=q.pack_type_code,
                soh_pct=q.soh_pct,
                quarantined_at=q.at,
                note=q.note,
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
    # The batteries with an anomaly in the window: the fleet summary's, from the same
    # snapshot, so both reports agree.
    recommended: frozenset[str]


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
    anomalies = window_snapshot(session, scope, start, end).anomalies
    return BatteriesReportQuery(start, end, query, frozenset(a.serial for a in anomalies))


_SERIAL_CURSOR = TypeAdapter(tuple[CursorText])


def batteries_page(
    session: Session, report: BatteriesReportQuery, *, cursor: str | None, limit: int
) -> Page[BatteryReportRow]:
    values = decode_cursor(cursor, _SERIAL_CURSOR)
    after = None if values is None else values[0]
    rows = repo.battery_rows(session, report.query, after=after, limit=limit + 1)
    return page_of(
        rows,
        limit,
        read=lambda row: report_row(row, report.day_to, row.serial in report.recommended),
        key=lambda row: (row.serial,),
    )


def iter_battery_rows(
    session: Session, query: repo.BatteryQuery, *, batch: int = CSV_BATCH_ROWS
) -> Iterator[BatteryWindow]:
    """Every battery of the query in serial order, fetched in keyset batches."""
    after: str | None = None
    while True:
        rows = repo.battery_rows(session, query, after=after, limit=batch)
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].serial


def refresh_recommendations(session: Session, *, day_from: date, day_to: date) -> int:
    """Detects anomalies over the whole fleet and records each as an open quarantine
    recommendation (updating an open one of the same kind). Nothing is quarantined: an
    operator decides. Returns the number of anomalies recorded."""
    found = find_anomalies(repo.anomaly_inputs(session, day_from, day_to), day_to)
    for row, anomaly in found:
        repo.upsert_recommendation(
            session,
            {
                "battery_id": row.id,
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
