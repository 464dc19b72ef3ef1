"""Vehicles. Admin and operator keys register and change them (operators serve every OEM);
OEM keys read only their own, and another OEM's vehicle is 404 so its VIN does not leak."""

from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.core.integrity import flush_or_raise
from app.core.keyset import AnyRow
from app.core.pagination import Page, page_of
from app.models import Vehicle, VehicleModel
from app.vehicles import repository
from app.vehicles.exceptions import (
    InstalledBatteryIncompatible,
    ModelOemMismatch,
    UnknownVehicleModel,
    VehicleExists,
    VehicleNotFound,
)
from app.vehicles.schemas import VehicleCreate, VehicleRead, VehicleUpdate


def _vehicle_read(row: AnyRow) -> VehicleRead:
    vehicle, oem_code, model_code, battery_serial = row
    return VehicleRead(
        vin=vehicle.vin,
        oem_code=oem_code,
        model_code=model_code,
        installed_battery_serial=battery_serial,
        created_at=vehicle.created_at,
        updated_at=vehicle.updated_at,
    )


def _resolve_model(session: Session, code: str) -> VehicleModel:
    model = repository.get_model(session, code)
    if model is None:
        raise UnknownVehicleModel(f"model_code: vehicle model {code!r} does not exist")
    return model


def read_vehicle(session: Session, principal: Principal, vin: str) -> VehicleRead:
    row = repository.vehicle_row(session, principal, vin)
    if row is None:
        raise VehicleNotFound(f"vehicle {vin!r} not found")
    return _vehicle_read(row)


def list_vehicles(
    session: Session,
    principal: Principal,
    *,
    oem_code: str | None,
    model_code: str | None,
    cursor: str | None,
    limit: int,
) -> Page[VehicleRead]:
    rows = repository.list_vehicle_rows(
        session, principal, oem_code=oem_code, model_code=model_code, cursor=cursor, limit=limit
    )
    return page_of(rows, limit, read=_vehicle_read, key=lambda row: (str(row[0].vin),))


def create_vehicle(session: Session, principal: Principal, data: VehicleCreate) -> VehicleRead:
    exists = VehicleExists(f"vehicle {data.vin!r} already exists")
    if repository.get_vehicle(session, data.vin) is not None:
        raise exists
    model = _resolve_model(session, data.model_code)
    session.add(Vehicle(vin=data.vin, oem_id=model.oem_id, model_id=model.id))
    flush_or_raise(session, exists)
    return read_vehicle(session, principal, data.vin)


def update_vehicle(
    session: Session, principal: Principal, vin: str, data: VehicleUpdate
) -> VehicleRead:
    vehicle = repository.get_vehicle(session, vin)
    if vehicle is None:
        raise VehicleNotFound(f"vehicle {vin!r} not found")
    if data.model_code is not None:
        model = _resolve_model(session, data.model_code)
        if model.oem_id != vehicle.oem_id:
            raise ModelOemMismatch(
                f"model_code: {data.model_code!r} is another OEM's model; "
                "a vehicle's manufacturer does not change"
            )
        battery = repository.installed_battery(session, vehicle.id)
        if battery is not None and not repository.model_takes_pack_type(
            session, model.id, battery.pack_type_id
        ):
            # The battery may be another OEM's, whose serial an OEM key may not read.
            readable = principal.oem_scope in (None, battery.oem_id)
            named = f" {battery.serial!r}" if readable else ""
            raise InstalledBatteryIncompatible(
                f"model_code: {data.model_code!r} does not take the pack type of the "
                f"installed battery{named}; remove it first"
            )
        vehicle.model_id = model.id
        session.flush()
    return read_vehicle(session, principal, vin)
