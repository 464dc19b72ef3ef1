import uuid
from dataclasses import dataclass
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from app.batteries import schemas as battery_schemas
from app.core.schemas import Code, RequestModel
from app.models import SwapOutcome
from app.vehicles import schemas as vehicle_schemas

Percent = float


class SwapCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "station_code": "UPW-BJ-001",
                    "vin": "LFWAB1234R0000001",
                    "removed_battery_serial": "CATL-LFP141-000042",
                    "removed_soc_pct": 18.5,
                    "removed_soh_pct": 96.2,
                    "started_at": "2026-11-22T08:15:00+08:00",
                    "finished_at": "2026-11-22T08:19:30+08:00",
                }
            ]
        },
    )

    station_code: Code
    vin: vehicle_schemas.Vin
    removed_battery_serial: battery_schemas.Serial
    installed_battery_serial: battery_schemas.Serial | None = Field(
        default=None,
        description="Omit to let the backend allocate a battery (see the allocation rule).",
    )
    removed_soc_pct: float | None = Field(default=None, ge=0, le=100)
    removed_soh_pct: float | None = Field(default=None, ge=0, le=100)
    installed_soc_pct: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="The station's reading at hand-out; checked against the target SoC "
        "instead of the last stored reading when given.",
    )
    installed_soh_pct: float | None = Field(default=None, ge=0, le=100)
    started_at: AwareDatetime | None = Field(default=None, description="Defaults to now.")
    finished_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _times_in_order(self) -> "SwapCreate":
        if self.started_at and self.finished_at and self.finished_at < self.started_at:
            raise ValueError("finished_at must not be before started_at")
        return self


class SwapRead(BaseModel):
    # For OEM keys, a battery of another OEM's program reads as a null serial, and its SoC
    # and SoH as null with it.
    id: uuid.UUID
    station_code: str
    vin: str
    outcome: SwapOutcome
    reason_code: str | None
    detail: str | None
    removed_battery_serial: str | None
    removed_soc_pct: Percent | None
    removed_soh_pct: Percent | None
    removed_to_slot_number: int | None
    installed_battery_serial: str | None
    installed_soc_pct: Percent | None
    installed_soh_pct: Percent | None
    installed_from_slot_number: int | None
    started_at: datetime
    finished_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class SwapFilter:
    """The query parameters of GET /v1/swaps."""

    station_code: str | None = None
    vin: str | None = None
    battery_serial: str | None = None
    outcome: SwapOutcome | None = None
    reason_code: str | None = None
    started_from: datetime | None = None
    started_to: datetime | None = None
