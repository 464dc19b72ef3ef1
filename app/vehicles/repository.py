from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.keyset import AnyRow, AnySelect, after_cursor
from app.models import Battery, Organization, Vehicle, VehicleModel, vehicle_model_pack_types


def get_vehicle(session: Session, vin: str) -> Vehicle | None:
    return session.scalar(select(Vehicle).where(Vehicle.vin == vin))


def _vehicle_rows() -> AnySelect:
    return (
        select(Vehicle, Organization.code, VehicleModel.code, Battery.serial)
        .join(Organization, Organization.id == Vehicle.oem_id)
        .join(VehicleModel, VehicleModel.id == Vehicle.model_id)
        .outerjoin(Battery, Battery.vehicle_id == Vehicle.id)
    )


def vehicle_row(session: Session, vin: str) -> AnyRow | None:
    """The vehicle with its OEM's and model's codes and its installed battery's serial."""
    return session.execute(_vehicle_rows().where(Vehicle.vin == vin)).one_or_none()


def list_vehicle_rows(
    session: Session,
    *,
    oem_id: int | None,
    oem_code: str | None,
    model_code: str | None,
    cursor: str | None,
    limit: int,
) -> Sequence[AnyRow]:
    statement = _vehicle_rows()
    if oem_id is not None:
        statement = statement.where(Vehicle.oem_id == oem_id)
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
