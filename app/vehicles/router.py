from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.dependencies import CurrentPrincipal, WriterPrincipal
from app.core.db import SessionDep
from app.core.errors import Forbidden, Unauthorized, problem_responses
from app.core.pagination import Cursor, InvalidCursor, Limit, Page
from app.vehicles import service
from app.vehicles.exceptions import (
    InstalledBatteryIncompatible,
    ModelOemMismatch,
    UnknownVehicleModel,
    VehicleExists,
    VehicleNotFound,
)
from app.vehicles.schemas import VehicleCreate, VehicleRead, VehicleUpdate

router = APIRouter(prefix="/vehicles", tags=["vehicles"])


@router.post(
    "",
    status_code=201,
    summary="Register a vehicle (admin or operator); its OEM follows from the model",
    responses=problem_responses(Unauthorized, Forbidden, VehicleExists, UnknownVehicleModel),
)
def create_vehicle(
    body: VehicleCreate, session: SessionDep, principal: WriterPrincipal
) -> VehicleRead:
    return service.create_vehicle(session, principal, body)


@router.get(
    "",
    summary="List vehicles (OEM keys: their own)",
    responses=problem_responses(Unauthorized, InvalidCursor),
)
def list_vehicles(
    session: SessionDep,
    principal: CurrentPrincipal,
    oem_code: Annotated[str | None, Query(description="Only this OEM's vehicles")] = None,
    model_code: Annotated[str | None, Query(description="Only vehicles of this model")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[VehicleRead]:
    return service.list_vehicles(
        session, principal, oem_code=oem_code, model_code=model_code, cursor=cursor, limit=limit
    )


@router.get(
    "/{vin}",
    summary="Read a vehicle and the battery it carries (OEM keys: their own)",
    responses=problem_responses(Unauthorized, VehicleNotFound),
)
def read_vehicle(vin: str, session: SessionDep, principal: CurrentPrincipal) -> VehicleRead:
    return service.read_vehicle(session, principal, vin)


@router.patch(
    "/{vin}",
    summary="Change a vehicle's model (same OEM; must take the installed battery)",
    responses=problem_responses(
        Unauthorized,
        Forbidden,
        VehicleNotFound,
        UnknownVehicleModel,
        ModelOemMismatch,
        InstalledBatteryIncompatible,
    ),
)
def update_vehicle(
    vin: str, body: VehicleUpdate, session: SessionDep, principal: WriterPrincipal
) -> VehicleRead:
    return service.update_vehicle(session, principal, vin, body)
