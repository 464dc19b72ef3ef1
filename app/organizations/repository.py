from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.keyset import after_cursor
from app.models import Organization, OrgRole


def get_by_code(session: Session, code: str) -> Organization | None:
    return session.scalar(select(Organization).where(Organization.code == code))


def list_page(
    session: Session,
    *,
    only_id: int | None,
    role: OrgRole | None,
    cursor: str | None,
    limit: int,
) -> Sequence[Organization]:
    statement = select(Organization)
    if only_id is not None:
        statement = statement.where(Organization.id == only_id)
    if role is not None:
        statement = statement.where(Organization.role == role)
    return session.scalars(after_cursor(statement, Organization.code, cursor, limit)).all()
