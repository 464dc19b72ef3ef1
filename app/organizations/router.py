from typing import Annotated

from fastapi import APIRouter, Query, status

from app.auth.dependencies import AdminPrincipal, CurrentPrincipal
from app.core.db import SessionDep
from app.core.errors import Forbidden, Unauthorized, problem_responses
from app.core.pagination import Cursor, InvalidCursor, Limit, Page
from app.models import OrgRole
from app.organizations import service
from app.organizations.exceptions import OrganizationExists, OrganizationNotFound
from app.organizations.schemas import OrganizationCreate, OrganizationRead, OrganizationUpdate

router = APIRouter(prefix="/organizations", tags=["organizations"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an organization (admin)",
    responses=problem_responses(Unauthorized, Forbidden, OrganizationExists),
)
def create_organization(
    body: OrganizationCreate, session: SessionDep, _: AdminPrincipal
) -> OrganizationRead:
    return OrganizationRead.model_validate(service.create(session, body))


@router.get(
    "",
    summary="List organizations (admin: all; other keys: their own)",
    responses=problem_responses(Unauthorized, InvalidCursor),
)
def list_organizations(
    session: SessionDep,
    principal: CurrentPrincipal,
    role: Annotated[OrgRole | None, Query(description="Only organizations with this role")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[OrganizationRead]:
    return service.list_visible(session, principal, role=role, cursor=cursor, limit=limit)


@router.get(
    "/{code}",
    summary="Read an organization (admin: any; other keys: their own)",
    responses=problem_responses(Unauthorized, OrganizationNotFound),
)
def read_organization(
    code: str, session: SessionDep, principal: CurrentPrincipal
) -> OrganizationRead:
    return OrganizationRead.model_validate(service.get_visible(session, principal, code))


@router.patch(
    "/{code}",
    summary="Rename an organization (admin)",
    responses=problem_responses(Unauthorized, Forbidden, OrganizationNotFound),
)
def update_organization(
    code: str, body: OrganizationUpdate, session: SessionDep, _: AdminPrincipal
) -> OrganizationRead:
    return OrganizationRead.model_validate(service.update(session, code, body))
