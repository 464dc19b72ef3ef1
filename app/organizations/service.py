from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.core.integrity import flush_or_raise
from app.core.pagination import Page, page_of
from app.models import Organization, OrgRole
from app.organizations import repository
from app.organizations.exceptions import (
    OrganizationExists,
    OrganizationNotFound,
    OrganizationRoleMismatch,
    UnknownOrganization,
)
from app.organizations.schemas import OrganizationCreate, OrganizationRead, OrganizationUpdate


def get_visible(session: Session, principal: Principal, code: str) -> Organization:
    """Scoped keys see only their own organization; others look absent, not forbidden."""
    org = repository.get_readable(session, principal, code)
    if org is None:
        raise OrganizationNotFound(f"organization {code!r} not found")
    return org


def list_visible(
    session: Session,
    principal: Principal,
    *,
    role: OrgRole | None,
    cursor: str | None,
    limit: int,
) -> Page[OrganizationRead]:
    rows = repository.list_page(session, principal, role=role, cursor=cursor, limit=limit)
    return page_of(rows, limit, read=OrganizationRead.model_validate, key=lambda org: (org.code,))


def create(session: Session, data: OrganizationCreate) -> Organization:
    exists = OrganizationExists(f"organization {data.code!r} already exists")
    if repository.get_by_code(session, data.code) is not None:
        raise exists
    org = Organization(code=data.code, name=data.name, role=data.role)
    session.add(org)
    flush_or_raise(session, exists)
    return org


def update(session: Session, code: str, data: OrganizationUpdate) -> Organization:
    org = repository.get_by_code(session, code)
    if org is None:
        raise OrganizationNotFound(f"organization {code!r} not found")
    if data.name is not None:
        org.name = data.name
    session.flush()
    return org


def resolve_reference(session: Session, code: str, *, role: OrgRole, field: str) -> Organization:
    """The organization a request body names in `field`, which must have `role`."""
    org = repository.get_by_code(session, code)
    if org is None:
        raise UnknownOrganization(f"{field}: organization {code!r} does not exist")
    if org.role is not role:
        raise OrganizationRoleMismatch(
            f"{field}: organization {code!r} has role {org.role}, expected {role}"
        )
    return org
