import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import RequestModel
from app.vehicles import schemas as vehicle_schemas


class IdTokenPut(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"vin": "LFWAB1234R0000001"}]})

    vin: vehicle_schemas.Vin


class IdTokenRead(BaseModel):
    id_token: str = Field(description="Lower-cased: OCPP idTokens are case-insensitive")
    vin: str


class OcppPasswordRead(BaseModel):
    station_code: str
    password: str = Field(description="Shown this once; only its hash is stored")


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


class SwapRequestCreate(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"vin": "LFWAB1234R0000001"}]})

    vin: vehicle_schemas.Vin = Field(
        description="The vehicle to swap; the station is sent its idToken (PUT /v1/id-tokens)"
    )


class SwapRequestRead(BaseModel):
    request_id: int = Field(description="OCPP requestId: the station's BatterySwap events carry it")
    station_code: str
    vin: str
    state: str = Field(
        description="pending (not yet sent: the station is not connected), sent, accepted, "
        "rejected (status_info says why), failed (no answer, or a CALLERROR)"
    )
    status_info: str | None
    swap_id: uuid.UUID | None = Field(description="The swap that followed, once it ended")
    created_at: datetime
    answered_at: datetime | None
