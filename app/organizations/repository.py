from collections.abc import Sequence

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.core.keyset import after_cursor
from app.models import Organization, OrgRole


def get_by_code(session: Session, code: str) -> Organization | None:
    return session.scalar(select(Organization).where(Organization.code == code))


def readable_statement(principal: Principal) -> Select[Organization]:
    """The organizations a key may read: a scoped key its own only, an admin every one."""
    statement = select(Organization)
    if not principal.is_admin:
        statement = statement.where(Organization.id == principal.organization_id)
    return statement


def get_readable(session: Session, principal: Principal, code: str) -> Organization | None:
    return session.scalar(readable_statement(principal).where(Organization.code == code))


def list_page(
    session: Session,
    principal: Principal,
    *,
    role: OrgRole | None,
    cursor: str | None,
    limit: int,
) -> Sequence[Organization]:
    statement = readable_statement(principal)
    if role is not None:
        statement = statement.where(Organization.role == role)
    return session.scalars(after_cursor(statement, Organization.code, cursor, limit)).all()
