"""`swapfleet report`, `rebuild-aggregates` and `detect-anomalies`: the reports straight from the
database, for cron jobs and for mailing a report without running the API.

Whoever holds the database URL already reads every table, so these commands act with an admin's
scope; `--oem` narrows a report to one OEM's fleet exactly as an admin's `oem_code` does.
"""

import enum
import logging
import sys
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, TextIO

import typer

from app.auth.service import Principal
from app.core.config import get_settings
from app.core.db import get_session_factory
from app.core.errors import AppError
from app.models import KeyRole
from app.reports import service
from app.reports.render.csv_report import batteries_csv
from app.reports.render.html import render_fleet_summary
from app.reports.scope import resolve_window
from app.rollups import rebuild

log = logging.getLogger(__name__)

report_cli = typer.Typer(
    help="OEM battery reports, read from the database directly.", no_args_is_help=True
)

CLI_PRINCIPAL = Principal(
    api_key_id=0, role=KeyRole.admin, organization_id=None, organization_code=None
)


class ReportFormat(enum.StrEnum):
    html = "html"
    csv = "csv"
    json = "json"


DAY_FORMATS = ["%Y-%m-%d"]
FromOption = Annotated[
    datetime | None,
    typer.Option("--from", formats=DAY_FORMATS, help="First UTC day, inclusive (YYYY-MM-DD)"),
]
ToOption = Annotated[
    datetime | None,
    typer.Option("--to", formats=DAY_FORMATS, help="Last UTC day, inclusive (default: today)"),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _require_database() -> None:
    if not get_settings().database_url:
        raise _fail("SWAPFLEET_DATABASE_URL is not set")


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


def _write(chunks: Iterable[str], out: TextIO) -> None:
    for chunk in chunks:
        out.write(chunk)


def _report_chunks(
    report_format: ReportFormat, oem: str | None, day_from: date | None, day_to: date | None
) -> list[str]:
    """Everything is read inside one transaction and kept in memory until it has committed, so
    a failure midway leaves no half-written file behind."""
    with get_session_factory().begin() as session:
        if report_format is ReportFormat.csv:
            query = service.batteries_query(
                session, CLI_PRINCIPAL, day_from=day_from, day_to=day_to, oem_code=oem
            )
            return list(batteries_csv(session, query))
        summary = service.fleet_summary(
            session, CLI_PRINCIPAL, day_from=day_from, day_to=day_to, oem_code=oem
        )
    if report_format is ReportFormat.html:
        return [render_fleet_summary(summary)]
    return [summary.model_dump_json(indent=2), "\n"]


@report_cli.command("report")
def report(
    oem: Annotated[
        str | None, typer.Option("--oem", help="OEM organization code (default: whole fleet)")
    ] = None,
    report_format: Annotated[
        ReportFormat,
        typer.Option(
            "--format",
            help="html: the fleet summary with charts; json: the fleet summary;"
            " csv: one row per battery",
        ),
    ] = ReportFormat.html,
    day_from: FromOption = None,
    day_to: ToOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout")
    ] = None,
) -> None:
    """Write an OEM's fleet report: HTML (self-contained, with charts), JSON or CSV."""
    _require_database()
    try:
        chunks = _report_chunks(report_format, oem, _day(day_from), _day(day_to))
    except AppError as exc:
        raise _fail(exc.detail) from exc
    if output is None:
        _write(chunks, sys.stdout)
        return
    try:
        with output.open("w", encoding="utf-8", newline="") as f:
            _write(chunks, f)
    except OSError as exc:
        raise _fail(f"cannot write {output}: {exc.strerror or exc}") from exc
    typer.echo(f"wrote {report_format.value} report to {output}", err=True)


@report_cli.command("rebuild-aggregates")
def rebuild_aggregates(
    day_from: Annotated[
        datetime, typer.Option("--from", formats=DAY_FORMATS, help="First UTC day, inclusive")
    ],
    day_to: Annotated[
        datetime, typer.Option("--to", formats=DAY_FORMATS, help="Last UTC day, inclusive")
    ],
) -> None:
    """Recompute the daily report aggregates of these days from the raw telemetry and swaps
    (backfill or repair); safe while the ingest runs."""
    _require_database()
    start, end = day_from.date(), day_to.date()
    if start > end:
        raise _fail(f"--from ({start}) is after --to ({end})")
    with get_session_factory().begin() as session:
        result = rebuild.rebuild_aggregates(
            session, start, end, session_gap_s=get_settings().ingest_session_gap_s
        )
    typer.echo(
        f"rebuilt {start} to {end}: {result.battery_days} battery-days,"
        f" {result.oem_swap_days} OEM swap-days"
    )


@report_cli.command("detect-anomalies")
def detect_anomalies(day_from: FromOption = None, day_to: ToOption = None) -> None:
    """Find batteries far from their cohort and record each as an open quarantine
    recommendation; nothing is quarantined (an operator decides). The reports do not need
    it: they compute the same anomalies when read (README, "Anomalies and quarantine
    recommendations"); this keeps a durable work list, e.g. from cron."""
    _require_database()
    try:
        start, end = resolve_window(_day(day_from), _day(day_to))
    except AppError as exc:
        raise _fail(exc.detail) from exc
    with get_session_factory().begin() as session:
        found = service.refresh_recommendations(session, day_from=start, day_to=end)
    typer.echo(f"{found} anomalies recorded as quarantine recommendations ({start} to {end})")
