from datetime import datetime
from functools import lru_cache
from typing import Annotated
from zoneinfo import available_timezones

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.core.schemas import Code, Name, PatchModel, RequestModel
from app.models import BatteryState, StationStatus

# A station cabinet holds tens of slots; the cap keeps one request from creating millions.
MAX_SLOTS = 500
# Slots are numbered in an integer column; a larger number can name no slot.
MAX_SLOT_NUMBER = 2**31 - 1


@lru_cache(maxsize=1)
def _iana_zones() -> frozenset[str]:
    # The system tz database also lists files that are not zone names.
    return frozenset(available_timezones() - {"localtime", "posixrules"})


def _iana_timezone(value: str) -> str:
    if value not in _iana_zones():
        raise ValueError(f"unknown IANA time zone {value!r} (expected e.g. 'Europe/Berlin')")
    return value


Timezone = Annotated[
    str,
    Field(min_length=1, max_length=64, description="IANA time zone name, e.g. Asia/Shanghai"),
    AfterValidator(_iana_timezone),
]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
TargetSoc = Annotated[
    float, Field(ge=0, le=100, description="Batteries below this charge are not handed out")
]


class StationCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "BJ-CHAOYANG-01",
                    "name": "Chaoyang logistics hub",
                    "operator_code": "voltway",
                    "latitude": 39.9219,
                    "longitude": 116.4436,
                    "timezone": "Asia/Shanghai",
                    "target_soc_pct": 90,
                    "slot_count": 8,
                }
            ]
        },
    )

    code: Code
    name: Name
    operator_code: Code | None = Field(
        default=None,
        description="Required for admin keys; operator keys create for their own organization",
    )
    latitude: Latitude
    longitude: Longitude
    timezone: Timezone
    status: StationStatus = StationStatus.active
    target_soc_pct: TargetSoc = 90.0
    slot_count: int = Field(default=0, ge=0, le=MAX_SLOTS, description="Creates slots 1..N")


class StationUpdate(PatchModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "maintenance"}, {"target_soc_pct": 85, "name": "Hub north"}]
        }
    )

    name: Name | None = None
    status: StationStatus | None = None
    target_soc_pct: TargetSoc | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    timezone: Timezone | None = None


class StationRead(BaseModel):
    code: str
    name: str
    operator_code: str
    latitude: float
    longitude: float
    timezone: str
    status: StationStatus
    target_soc_pct: float
    online: bool
    last_seen_at: datetime | None
    slot_count: int
    created_at: datetime
    updated_at: datetime


class SlotFault(BaseModel):
    code: str
    info: str | None
    reported_at: datetime


class SlotRead(BaseModel):
    number: int
    enabled: bool
    occupied: bool
    # Null when the slot is empty, and for OEM keys when the battery is another OEM's.
    battery_serial: str | None
    pack_type_code: str | None
    battery_state: BatteryState | None
    soc_pct: float | None
    soh_pct: float | None
    # As the station last reported it over OCPP (StatusNotification): Available, Occupied,
    # Reserved, Unavailable or Faulted; null for a station that never did.
    connector_status: str | None
    connector_status_at: datetime | None
    # An open problem the station reported over OCPP (NotifyEvent); null when none.
    fault: SlotFault | None


class SlotsAdd(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"count": 2}]})

    count: int = Field(ge=1, le=MAX_SLOTS, description="Slots to add after the last one")


class SlotUpdate(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"enabled": False}]})

    enabled: bool
