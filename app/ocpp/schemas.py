import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.request_models import RequestModel
from app.vehicles import schemas as vehicle_schemas


class IdTokenPut(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"vin": "LFWAB1234R0000001"}]})

    vin: vehicle_schemas.Vin


class IdTokenRead(BaseModel):
    id_token: str = Field(description="Lower-cased: OCPP idTokens are case-insensitive")
    vin: str


class CustodyExceptionRead(BaseModel):
    id: int
    station_code: str
    at: datetime
    reason_code: str = Field(
        description="The swap rule the station broke (BatterySoHLow, BatterySoC, "
        "BatteryMismatch, BatteryNotAtStation, BatteryDamaged, BatteryType, BatteryUnknown, "
        "VehicleUnknown, StationUnavailable), or IdTokenUnknown, SlotOccupied, VehicleOccupied"
    )
    detail: str
    swap_id: uuid.UUID | None
    request_id: int | None = Field(description="The OCPP requestId of the swap")
    battery_serial: str | None
