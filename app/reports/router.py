from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from app.auth.dependencies import CurrentPrincipal
from app.batteries.exceptions import BatteryNotFound
from app.core.db import SessionDep, StreamingSessionDep
from app.core.errors import Unauthorized, problem_responses
from app.core.pagination import Cursor, InvalidCursor, Limit, Page
from app.models import BatteryState
from app.reports import passport, service
from app.reports.exceptions import InvalidWindow, ReportsForbidden, UnknownOem, UnknownPackType
from app.reports.render import csv_report
from app.reports.render import html as report_html
from app.reports.schemas import BatteryPassport, BatteryReportRow, FleetSummary

router = APIRouter(prefix="/reports", tags=["reports"])
passport_router = APIRouter(prefix="/batteries", tags=["reports"])

REPORT_ERRORS = (Unauthorized, ReportsForbidden, UnknownOem, InvalidWindow)

DayFrom = Annotated[
    date | None,
    Query(alias="from", description="First UTC day, inclusive (default: see report_window_days)"),
]
DayTo = Annotated[date | None, Query(alias="to", description="Last UTC day, inclusive (today)")]
OemCode = Annotated[
    str | None,
    Query(max_length=64, description="Admins: the OEM to report on (default: whole fleet)"),
]


# A bin narrower than one cycle says nothing more and, near zero, has no integer index.
CycleBinWidth = Annotated[
    float, Query(ge=1, le=100_000, description="Width of a SoH-by-cycles bin, in cycles")
]
AgeBinDays = Annotated[int, Query(ge=1, le=36_600, description="Width of a SoH-by-age bin")]


@router.get(
    "/fleet-summary",
    summary="Counts, SoH distribution, energy, swaps, quarantines and anomalies of a fleet",
    responses=problem_responses(*REPORT_ERRORS),
)
def fleet_summary(
    session: SessionDep,
    principal: CurrentPrincipal,
    day_from: DayFrom = None,
    day_to: DayTo = None,
    oem_code: OemCode = None,
    cycle_bin_width: CycleBinWidth = 250.0,
    age_bin_days: AgeBinDays = 180,
) -> FleetSummary:
    """Everything is read from the daily aggregates. SoH figures are each battery's latest
    health record in the window; anomalies compare a battery with the batteries of the same
    OEM and pack type (robust z-score) and are also recorded as quarantine recommendations by
    the detection job, for an operator to decide on."""
    return service.fleet_summary(
        session,
        principal,
        day_from=day_from,
        day_to=day_to,
        oem_code=oem_code,
        cycle_bin_width=cycle_bin_width,
        age_bin_days=age_bin_days,
    )


@router.get(
    "/fleet-summary.html",
    summary="The fleet summary as one self-contained HTML page with static SVG charts",
    response_class=HTMLResponse,
    responses={
        **problem_responses(*REPORT_ERRORS),
        200: {"content": {"text/html": {}}, "description": "No script, no external asset"},
    },
)
def fleet_summary_html(
    session: SessionDep,
    principal: CurrentPrincipal,
    day_from: DayFrom = None,
    day_to: DayTo = None,
    oem_code: OemCode = None,
    cycle_bin_width: CycleBinWidth = 250.0,
    age_bin_days: AgeBinDays = 180,
) -> HTMLResponse:
    """The figures of `/fleet-summary` drawn as inline SVG: it opens anywhere and can be
    saved or mailed as one file."""
    summary = service.fleet_summary(
        session,
        principal,
        day_from=day_from,
        day_to=day_to,
        oem_code=oem_code,
        cycle_bin_width=cycle_bin_width,
        age_bin_days=age_bin_days,
    )
    return HTMLResponse(
        report_html.render_fleet_summary(summary), headers=report_html.response_headers(summary)
    )


@router.get(
    "/batteries",
    summary="One row per battery over a window; JSON pages, or CSV with Accept: text/csv",
    response_model=Page[BatteryReportRow],
    responses={
        **problem_responses(*REPORT_ERRORS, UnknownPackType, InvalidCursor),
        200: {"content": {"text/csv": {}}, "description": "A page, or the whole report as CSV"},
    },
)
def batteries_report(
    request: Request,
    session: SessionDep,
    stream_session: StreamingSessionDep,
    principal: CurrentPrincipal,
    day_from: DayFrom = None,
    day_to: DayTo = None,
    oem_code: OemCode = None,
    pack_type: Annotated[str | None, Query(max_length=64)] = None,
    state: BatteryState | None = None,
    max_soh: Annotated[float | None, Query(ge=0, le=100)] = None,
    min_soh: Annotated[float | None, Query(ge=0, le=100)] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Any:
    """`max_soh`/`min_soh` filter on the SoH at the end of the window (the battery's stored
    SoH if it reported none in the window). CSV streams every matching battery (no paging)."""
    report = service.batteries_query(
        session,
        principal,
        day_from=day_from,
        day_to=day_to,
        oem_code=oem_code,
        pack_type=pack_type,
        state=state,
        max_soh_pct=max_soh,
        min_soh_pct=min_soh,
    )
    if "text/csv" in request.headers.get("accept", ""):
        filename = f"batteries_{report.day_from}_{report.day_to}.csv"
        return StreamingResponse(
            csv_report.batteries_csv(stream_session, report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return service.batteries_page(session, report, cursor=cursor, limit=limit)


@passport_router.get(
    "/{serial}/passport",
    summary="Battery passport: EU 2023/1542 Annex XIII performance and durability",
    responses=problem_responses(Unauthorized, ReportsForbidden, BatteryNotFound),
)
def battery_passport(
    session: SessionDep, principal: CurrentPrincipal, serial: str
) -> BatteryPassport:
    """Lifetime figures from the daily aggregates. Attributes the data cannot support are
    present, null, and listed in `not_derivable`; none is estimated from a model."""
    return passport.passport(session, principal, serial)
