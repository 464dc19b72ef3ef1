from collections.abc import Sequence

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, joinedload, selectinload

from app.auth.service import Principal
from app.core.keyset import after_cursor
from app.models import Organization, PackType, VehicleModel, vehicle_model_pack_types


def get_pack_type(session: Session, code: str) -> PackType | None:
    return session.scalar(select(PackType).where(PackType.code == code))


def pack_types_by_code(session: Session, codes: Sequence[str]) -> dict[str, PackType]:
    rows = session.scalars(select(PackType).where(PackType.code.in_(codes)))
    return {p.code: p for p in rows}


def list_pack_types(
    session: Session, *, chemistry: str | None, cursor: str | None, limit: int
) -> Sequence[PackType]:
    statement = select(PackType)
    if chemistry is not None:
        statement = statement.where(PackType.chemistry == chemistry)
    return session.scalars(after_cursor(statement, PackType.code, cursor, limit)).all()


def _models_with_relations() -> Select[VehicleModel]:
    return select(VehicleModel).options(
        joinedload(VehicleModel.oem), selectinload(VehicleModel.pack_types)
    )


def readable_statement(principal: Principal) -> Select[VehicleModel]:
    """The vehicle models a key may read: an OEM key its own; operators serve every OEM and,
    like admins, read all."""
    statement = _models_with_relations()
    if principal.oem_scope is not None:
        statement = statement.where(VehicleModel.oem_id == principal.oem_scope)
    return statement


def get_vehicle_model(session: Session, code: str) -> VehicleModel | None:
    return session.scalar(_models_with_relations().where(VehicleModel.code == code))


def get_readable_vehicle_model(
    session: Session, principal: Principal, code: str
) -> VehicleModel | None:
    return session.scalar(readable_statement(principal).where(VehicleModel.code == code))


def list_vehicle_models(
    session: Session,
    principal: Principal,
    *,
    oem_code: str | None,
    pack_type_code: str | None,
    cursor: str | None,
    limit: int,
) -> Sequence[VehicleModel]:
    statement = readable_statement(principal)
    if oem_code is not None:
        statement = statement.where(
            VehicleModel.oem_id.in_(select(Organization.id).where(Organization.code == oem_code))
        )
    if pack_type_code is not None:
        statement = statement.where(
            VehicleModel.id.in_(
                select(vehicle_model_pack_types.c.vehicle_model_id)
                .join(PackType, PackType.id == vehicle_model_pack_types.c.pack_type_id)
                .where(PackType.code == pack_type_code)
            )
        )
    return session.scalars(after_cursor(statement, VehicleModel.code, cursor, limit)).all()
