"""The batteries report as CSV, streamed one chunk per keyset batch."""

import csv
import io
from collections.abc import Iterator

from sqlalchemy.orm import Session

from app.reports.figures import report_row
from app.reports.schemas import BatteryReportRow
from app.reports.service import CSV_BATCH_ROWS, BatteriesReportQuery, iter_battery_rows

CSV_FIELDS = tuple(BatteryReportRow.model_fields)


def csv_value(value: object) -> object:
    """None as an empty cell; not_derivable's reasons as `field: reason; field: reason`."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    return value


def batteries_csv(session: Session, report: BatteriesReportQuery) -> Iterator[str]:
    """The whole report as CSV, one chunk per keyset batch."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for row in iter_battery_rows(session, report.query):
        recommended = row.serial in report.recommended
        data = report_row(row, report.day_to, recommended).model_dump(mode="json")
        writer.writerow({k: csv_value(v) for k, v in data.items()})
        n += 1
        if n % CSV_BATCH_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
