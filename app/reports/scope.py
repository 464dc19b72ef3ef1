"""Whose batteries a report covers, and over which days.

An OEM key reports on its own program's batteries (battery.oem_id) and gets 404 for any other
battery; an admin reports on the whole fleet or names an OEM; operator keys are refused (403):
performance reports are the OEMs' view, and an operator's custody data is elsewhere.
"""

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.core import clock
from app.core.config import get_settings
from app.models import KeyRole, OrgRole
from app.reports import repository as repo
from app.reports.exceptions import InvalidWindow, ReportsForbidden, UnknownOem, UnknownPackType

EARLIEST_DAY = date(2000, 1, 1)
LATEST_DAY = date(2100, 12, 31)


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
    if org is None or org.role is not OrgRole.oem:
        raise UnknownOem(f"no OEM organization with code {oem_code!r}")
    return Scope(org.id, org.code)


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
