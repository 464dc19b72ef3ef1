import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from app.core.schemas import RequestModel, Text
from app.models import BatteryState, CustodyCause, LocationKind, ReadingSource
from app.stations.schemas import MAX_SLOT_NUMBER
from app.vehicles import schemas as vehicle_schemas

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
# Serials travel in URL paths, so they keep to the same safe alphabet as codes.
Serial = Code
Note = Annotated[Text | None, Field(default=None, max_length=200)]
Percent = Annotated[float | None, Field(default=None, ge=0, le=100)]
# Traction packs are rated for a few thousand full cycles; a hundred thousand is no battery,
# and a bound keeps fleet sums of the column finite.
MAX_EQUIVALENT_FULL_CYCLES = 100_000
# The same bound as throughput: 100,000 full cycles of a 1 MWh pack, charged and discharged.
MAX_ENERGY_THROUGHPUT_KWH = 2e8
MAX_CAPACITY_THROUGHPUT_AH = 2e9


class SlotPlace(RequestModel):
    kind: Literal["slot"]
    station_code: Code
    slot_number: int = Field(ge=1, le=MAX_SLOT_NUMBER)
    note: Note = None


class VehiclePlace(RequestModel):
    kind: Literal["vehicle"]
    vin: vehicle_schemas.Vin
    note: Note = None


class WarehousePlace(RequestModel):
    kind: Literal["warehouse"]
    # For warehouse and in_transit the note also says where the battery is (shelf, carrier).
    note: Note = None


class InTransitPlace(RequestModel):
    kind: Literal["in_transit"]
    note: Note = None


Place = Annotated[
    SlotPlace | VehiclePlace | WarehousePlace | InTransitPlace, Field(discriminator="kind")
]


class BatteryCreate(RequestModel):
    serial: Serial
    pack_type_code: Code
    owner_code: Code
    oem_code: Code | None = None
    manufactured_on: date | None = None
    location: Place
    soc_pct: Percent = None
    soh_pct: Percent = None
    equivalent_full_cycles: float | None = Field(
        default=None,
        ge=0,
        le=MAX_EQUIVALENT_FULL_CYCLES,
        description="Full-equivalent cycles the battery has done, when known; reports label the"
        " figure as given at registration until the BMS reports a cycle count. Omitted: unknown"
        " (stored as 0 for allocation, reported as null).",
    )
    energy_throughput_kwh: float | None = Field(
        default=None,
        ge=0,
        le=MAX_ENERGY_THROUGHPUT_KWH,
        description="Energy charged into the battery before registration, when known: the"
        " passport's lifetime throughput adds it to what telemetry measures afterwards.",
    )
    capacity_throughput_ah: float | None = Field(
        default=None,
        ge=0,
        le=MAX_CAPACITY_THROUGHPUT_AH,
        description="Ah charged plus Ah discharged before registration, when known; given"
        " together with energy_throughput_kwh.",
    )

    @model_validator(mode="after")
    def _history_whole(self) -> "BatteryCreate":
        # The passport states one period for both throughputs, from manufacture when they
        # include a history: half a history would make one of them cover less than it says.
        if (self.energy_throughput_kwh is None) != (self.capacity_throughput_ah is None):
            raise ValueError("energy_throughput_kwh and capacity_throughput_ah come together")
        return self


class BatteryUpdate(RequestModel):
    """Only the fields sent are changed; `oem_code: null` detaches the battery from its OEM."""

    owner_code: Code | None = None
    oem_code: Code | None = None
    manufactured_on: date | None = None

    @field_validator("owner_code")
    @classmethod
    def _owner_not_null(cls, value: str | None) -> str | None:
        # Only reached when the client sent the field; every battery has an owner.
        if value is None:
            raise ValueError("owner_code cannot be null")
        return value


class QuarantineRequest(RequestModel):
    reason: Text = Field(min_length=1, max_length=1000)


class StateChangeRequest(RequestModel):
    note: Text | None = Field(default=None, max_length=1000)


class LocationRead(BaseModel):
    kind: LocationKind
    station_code: str | None = None
    slot_number: int | None = None
    vin: str | None = Field(
        default=None,
        description="Null unless kind is vehicle, and for OEM keys when the vehicle is "
        "another OEM's (kind stays vehicle)",
    )
    note: str | None = None


class BatteryRead(BaseModel):
    serial: str
    pack_type_code: str
    owner_code: str
    oem_code: str | None
    manufactured_on: date | None
    state: BatteryState
    location: LocationRead
    soc_pct: float | None
    soh_pct: float | None
    equivalent_full_cycles: float
    readings_at: datetime | None = Field(description="The newest of the readings' times")
    soc_measured_at: datetime | None = Field(
        default=None, description="When soc_pct was measured; null: given at registration"
    )
    soh_measured_at: datetime | None = Field(
        default=None, description="When soh_pct was measured; null: given at registration"
    )
    soh_source: ReadingSource | None = Field(
        default=None, description="Where soh_pct came from; null when there is none"
    )
    cycles_measured_at: datetime | None = Field(
        default=None,
        description="When the BMS reported equivalent_full_cycles; null: given at registration",
    )
    cycles_source: ReadingSource | None = Field(
        default=None,
        description="Where equivalent_full_cycles came from; null: nobody gave it (it reads 0)",
    )


class CustodyEventRead(BaseModel):
    at: datetime
    cause: CustodyCause
    # Null for the `registered` event: the battery came from nowhere we track.
    from_location: LocationRead | None
    to_location: LocationRead
    state_from: BatteryState | None
    state_to: BatteryState
    swap_id: uuid.UUID | None
    note: str | None


@dataclass(frozen=True)
class BatteryFilter:
    """The query parameters of GET /v1/batteries."""

    state: BatteryState | None = None
    pack_type_code: str | None = None
    owner_code: str | None = None
    oem_code: str | None = None
    station_code: str | None = None
    location_kind: LocationKind | None = None
    min_soc_pct: float | None = None
    max_soh_pct: float | None = None
