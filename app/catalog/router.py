from typing import Annotated

from fastapi import APIRouter, Query, status

from app.auth.dependencies import AdminPrincipal, CurrentPrincipal
from app.catalog import service
from app.catalog.exceptions import (
    PackTypeExists,
    PackTypeNotFound,
    UnknownPackType,
    VehicleModelExists,
    VehicleModelNotFound,
)
from app.catalog.schemas import (
    PackTypeCreate,
    PackTypeRead,
    PackTypeUpdate,
    VehicleModelCreate,
    VehicleModelRead,
    VehicleModelUpdate,
)
from app.core.db import SessionDep
from app.core.errors import Forbidden, Unauthorized, problem_responses
from app.core.pagination import Cursor, InvalidCursor, Limit, Page
from app.organizations.exceptions import OrganizationRoleMismatch, UnknownOrganization

router = APIRouter()


@router.post(
    "/pack-types",
    tags=["pack types"],
    status_code=status.HTTP_201_CREATED,
    summary="Create a pack type (admin)",
    responses=problem_responses(Unauthorized, Forbidden, PackTypeExists),
)
def create_pack_type(body: PackTypeCreate, session: SessionDep, _: AdminPrincipal) -> PackTypeRead:
    return PackTypeRead.model_validate(service.create_pack_type(session, body))


@router.get(
    "/pack-types",
    tags=["pack types"],
    summary="List pack types",
    responses=problem_responses(Unauthorized, InvalidCursor),
)
def list_pack_types(
    session: SessionDep,
    _: CurrentPrincipal,
    chemistry: Annotated[str | None, Query(description="Only this chemistry, e.g. LFP")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[PackTypeRead]:
    return service.list_pack_types(session, chemistry=chemistry, cursor=cursor, limit=limit)


@router.get(
    "/pack-types/{code}",
    tags=["pack types"],
    summary="Read a pack type",
    responses=problem_responses(Unauthorized, PackTypeNotFound),
)
def read_pack_type(code: str, session: SessionDep, _: CurrentPrincipal) -> PackTypeRead:
    return PackTypeRead.model_validate(service.get_pack_type(session, code))


@router.patch(
    "/pack-types/{code}",
    tags=["pack types"],
    summary="Update a pack type (admin)",
    responses=problem_responses(Unauthorized, Forbidden, PackTypeNotFound),
)
def update_pack_type(
    code: str, body: PackTypeUpdate, session: SessionDep, _: AdminPrincipal
) -> PackTypeRead:
    return PackTypeRead.model_validate(service.update_pack_type(session, code, body))


@router.post(
    "/vehicle-models",
    tags=["vehicle models"],
    status_code=status.HTTP_201_CREATED,
    summary="Create a vehicle model and the pack types it takes (admin)",
    responses=problem_responses(
        Unauthorized,
        Forbidden,
        VehicleModelExists,
        UnknownOrganization,
        OrganizationRoleMismatch,
        UnknownPackType,
    ),
)
def create_vehicle_model(
    body: VehicleModelCreate, session: SessionDep, _: AdminPrincipal
) -> VehicleModelRead:
    return service.model_read(service.create_vehicle_model(session, body))


@router.get(
    "/vehicle-models",
    tags=["vehicle models"],
    summary="List vehicle models (OEM keys: their own)",
    responses=problem_responses(Unauthorized, InvalidCursor),
)
def list_vehicle_models(
    session: SessionDep,
    principal: CurrentPrincipal,
    oem_code: Annotated[str | None, Query(description="Only this OEM's models")] = None,
    pack_type_code: Annotated[
        str | None, Query(description="Only models that take this pack type")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[VehicleModelRead]:
    return service.list_vehicle_models(
        session,
        principal,
        oem_code=oem_code,
        pack_type_code=pack_type_code,
        cursor=cursor,
        limit=limit,
    )


@router.get(
    "/vehicle-models/{code}",
    tags=["vehicle models"],
    summary="Read a vehicle model (OEM keys: their own)",
    responses=problem_responses(Unauthorized, VehicleModelNotFound),
)
def read_vehicle_model(
    code: str, session: SessionDep, principal: CurrentPrincipal
) -> VehicleModelRead:
    return service.model_read(service.get_vehicle_model(session, principal, code))


@router.patch(
    "/vehicle-models/{code}",
    tags=["vehicle models"],
    summary="Rename a vehicle model or replace its pack types (admin)",
    responses=problem_responses(Unauthorized, Forbidden, VehicleModelNotFound, UnknownPackType),
)
def update_vehicle_model(
    code: str, body: VehicleModelUpdate, session: SessionDep, _: AdminPrincipal
) -> VehicleModelRead:
    return service.model_read(service.update_vehicle_model(session, code, body))
