from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, case, exists, func, null, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from app.auth.service import Principal
from app.batteries import repository as battery_repo
from app.core.keyset import AnyRow, AnySelect, after_cursor
from app.models import Battery, Organization, Vehicle, VehicleModel, vehicle_model_pack_types

# A column or attribute that holds a VIN (vehicles, custody events, swaps).
VinColumn = ColumnElement[Any] | InstrumentedAttribute[Any]


def get_vehicle(session: Session, vin: str) -> Vehicle | None:
    return session.scalar(select(Vehicle).where(Vehicle.vin == vin))


def readable_vin(vin: VinColumn, viewer_oem_id: "battery_repo.ViewerOem") -> VinColumn:
    """A VIN as the viewer may read it, for every route that names a vehicle.

    An OEM key (viewer_oem_id set) reads the VINs of its own vehicles only; another OEM's
    reads as null (a battery's location keeps its kind, `vehicle`), as GET /vehicles/{vin}
    is a 404 for it. Admin and operator keys (None) read every VIN.
    """
    if viewer_oem_id is None:
        return vin
    # An alias, so that the subquery never correlates with a vehicles table outside it.
    candidate = aliased(Vehicle)
    own = exists().where(candidate.vin == vin, candidate.oem_id == viewer_oem_id)
    return case((own, vin), else_=null())


def readable_statement(principal: Principal) -> AnySelect:
    """The vehicles a key may read, with their OEM's and model's codes and the installed
    battery's serial as the key may read it: an OEM key its own vehicles (another OEM's is a
    404, so its VIN does not leak); admin and operator keys (operators serve every OEM) all."""
    statement = _vehicle_rows(principal.oem_scope)
    if principal.oem_scope is not None:
        statement = statement.where(Vehicle.oem_id == principal.oem_scope)
    return statement


def _vehicle_rows(viewer_oem_id: int | None) -> AnySelect:
    installed = battery_repo.readable_serial(Battery.serial, viewer_oem_id)
    return (
        select(Vehicle, Organization.code, VehicleModel.code, installed)
        .join(Organization, Organization.id == Vehicle.oem_id)
        .join(VehicleModel, VehicleModel.id == Vehicle.model_id)
        .outerjoin(Battery, Battery.vehicle_id == Vehicle.id)
    )


def vehicle_row(session: Session, principal: Principal, vin: str) -> AnyRow | None:
    return session.execute(readable_statement(principal).where(Vehicle.vin == vin)).one_or_none()


def list_vehicle_rows(
    session: Session,
    principal: Principal,
    *,
    oem_code: str | None,
    model_code: str | None,
    cursor: str | None,
    limit: int,
) -> Sequence[AnyRow]:
    statement = readable_statement(principal)
    if oem_code is not None:
        statement = statement.where(Organization.code == oem_code)
    if model_code is not None:
        statement = statement.where(VehicleModel.code == model_code)
    return session.execute(after_cursor(statement, Vehicle.vin, cursor, limit)).all()


def get_model(session: Session, code: str) -> VehicleModel | None:
    return session.scalar(select(VehicleModel).where(VehicleModel.code == code))


def installed_battery(session: Session, vehicle_id: int) -> Battery | None:
    return session.scalar(select(Battery).where(Battery.vehicle_id == vehicle_id))


def model_takes_pack_type(session: Session, model_id: int, pack_type_id: int) -> bool:
    count = session.scalar(
        select(func.count())
        .select_from(vehicle_model_pack_types)
        .where(
            vehicle_model_pack_types.c.vehicle_model_id == model_id,
            vehicle_model_pack_types.c.pack_type_id == pack_type_id,
        )
    )
    return bool(count)
