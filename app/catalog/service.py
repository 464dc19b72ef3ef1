from collections.abc import Sequence

from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.catalog import repository
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
from app.core.integrity import flush_or_raise
from app.core.pagination import Page, page_of
from app.models import OrgRole, PackType, VehicleModel
from app.organizations import service as organization_service


def get_pack_type(session: Session, code: str) -> PackType:
    pack = repository.get_pack_type(session, code)
    if pack is None:
        raise PackTypeNotFound(f"pack type {code!r} not found")
    return pack


def list_pack_types(
    session: Session, *, chemistry: str | None, cursor: str | None, limit: int
) -> Page[PackTypeRead]:
    rows = repository.list_pack_types(session, chemistry=chemistry, cursor=cursor, limit=limit)
    return page_of(rows, limit, read=PackTypeRead.model_validate, key=lambda pack: (pack.code,))


def create_pack_type(session: Session, data: PackTypeCreate) -> PackType:
    exists = PackTypeExists(f"pack type {data.code!r} already exists")
    if repository.get_pack_type(session, data.code) is not None:
        raise exists
    pack = PackType(**data.model_dump())
    session.add(pack)
    flush_or_raise(session, exists)
    return pack


def update_pack_type(session: Session, code: str, data: PackTypeUpdate) -> PackType:
    pack = get_pack_type(session, code)
    for field, value in data.model_dump(exclude_unset=True).items():
        setattr(pack, field, value)
    session.flush()
    return pack


def resolve_pack_types(session: Session, codes: Sequence[str]) -> list[PackType]:
    found = repository.pack_types_by_code(session, codes)
    missing = [code for code in codes if code not in found]
    if missing:
        raise UnknownPackType(
            "pack_type_codes: unknown pack type(s) " + ", ".join(repr(c) for c in missing)
        )
    return [found[code] for code in codes]


def model_read(model: VehicleModel) -> VehicleModelRead:
    return VehicleModelRead(
        code=model.code,
        name=model.name,
        oem_code=model.oem.code,
        pack_type_codes=sorted(p.code for p in model.pack_types),
        created_at=model.created_at,
    )


def get_vehicle_model(session: Session, principal: Principal, code: str) -> VehicleModel:
    model = repository.get_readable_vehicle_model(session, principal, code)
    if model is None:
        raise VehicleModelNotFound(f"vehicle model {code!r} not found")
    return model


def list_vehicle_models(
    session: Session,
    principal: Principal,
    *,
    oem_code: str | None,
    pack_type_code: str | None,
    cursor: str | None,
    limit: int,
) -> Page[VehicleModelRead]:
    rows = repository.list_vehicle_models(
        session,
        principal,
        oem_code=oem_code,
        pack_type_code=pack_type_code,
        cursor=cursor,
        limit=limit,
    )
    return page_of(rows, limit, read=model_read, key=lambda model: (model.code,))


def create_vehicle_model(session: Session, data: VehicleModelCreate) -> VehicleModel:
    exists = VehicleModelExists(f"vehicle model {data.code!r} already exists")
    if repository.get_vehicle_model(session, data.code) is not None:
        raise exists
    oem = organization_service.resolve_reference(
        session, data.oem_code, role=OrgRole.oem, field="oem_code"
    )
    model = VehicleModel(code=data.code, name=data.name, oem_id=oem.id)
    model.oem = oem
    model.pack_types = resolve_pack_types(session, data.pack_type_codes)
    session.add(model)
    flush_or_raise(session, exists)
    return model


def update_vehicle_model(session: Session, code: str, data: VehicleModelUpdate) -> VehicleModel:
    model = repository.get_vehicle_model(session, code)
    if model is None:
        raise VehicleModelNotFound(f"vehicle model {code!r} not found")
    if data.name is not None:
        model.name = data.name
    if data.pack_type_codes is not None:
        model.pack_types = resolve_pack_types(session, data.pack_type_codes)
    session.flush()
    return model
