"""The MQTT wire contract, version 1: topics and payload models shared by devices and the ingest.

docs/asyncapi.yaml describes the same contract for people and other languages; a test keeps
the two in agreement. This module imports nothing from app/ so that device code can ship alone.
"""

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

CONTRACT_VERSION = 1
DEFAULT_TOPIC_PREFIX = "swapfleet/v1"
MAX_RECORDS_PER_MESSAGE = 1000
# MQTT versions a device or the ingest may speak: "3.1.1" for brokers without MQTT 5 (the
# embedded demo broker of `swapfleet up`).
MqttProtocol = Literal["5", "3.1.1"]

# The physical limits of the equipment; a reading outside them is a broken sensor or a bug,
# and is dead-lettered as `impossible_value`. Every number has both bounds: one absurd value
# (1e308 kWh) otherwise overflows the sums the reports build over the whole fleet. The
# bounds admit the largest heavy-truck equipment with room to spare, and nothing beyond it.
SOC_MIN, SOC_MAX = 0.0, 100.0
TEMP_MIN_C, TEMP_MAX_C = -50.0, 150.0
# Swap-station racks hold tens of batteries; the bound keeps a slot number in int4.
SLOT_MAX = 1000
# Heavy-truck packs are 600-900 V nominal, about 1,000 V charged; 1,500 V is the top of the
# low-voltage DC range (IEC 60038) and above MCS's 1,250 V.
PACK_VOLTAGE_MAX_V = 1500.0
# The Megawatt Charging System allows 3,000 A; either sign (charge, discharge).
PACK_CURRENT_MAX_A = 3000.0
# MCS's 3.75 MW per connector, either sign.
POWER_MAX_KW = 4000.0
# The largest truck packs hold about 1,000 kWh (600 kWh is common); twice that covers one
# charge's delivered energy with losses, and any measured capacity.
ENERGY_MAX_KWH = 2000.0
# 2,000 kWh at a 200 V pack.
CAPACITY_MAX_AH = 10_000.0
# A healthy pack is 1-500 mOhm; a failing contact reads higher. 100 Ohm is a broken circuit.
RESISTANCE_MAX_MOHM = 100_000.0
# Lithium cells stay within 0-5 V; 10 V leaves room for other chemistries' sensors.
CELL_VOLTAGE_MAX_V = 10.0
# LFP lasts 3,000-10,000 full cycles; ten times that is no real pack. Fits int4.
CYCLE_COUNT_MAX = 100_000
# A heavy truck drives 1.5-2 million km in its life.
ODOMETER_MAX_KM = 10_000_000.0

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


class RecordKind(StrEnum):
    charging = "charging"
    health = "health"
    capacity = "capacity"
    status = "status"
    vehicle = "telemetry"


STATION_KINDS = (RecordKind.charging, RecordKind.health, RecordKind.capacity, RecordKind.status)


class _Record(BaseModel):
    # Unknown fields are kept, not dropped: newer firmware may send more than v1 defines.
    model_config = ConfigDict(extra="allow", frozen=True)

    ts: AwareDatetime = Field(description="RFC 3339 with an offset")

    @property
    def extra(self) -> dict[str, Any] | None:
        return dict(self.model_extra) if self.model_extra else None


Serial = Field(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN)
SocPct = Field(ge=SOC_MIN, le=SOC_MAX)
TempC = Field(ge=TEMP_MIN_C, le=TEMP_MAX_C)


class ChargingSample(_Record):
    battery_serial: str = Serial
    slot: int = Field(ge=1, le=SLOT_MAX)
    soc_pct: float = SocPct
    voltage_v: float = Field(ge=0, le=PACK_VOLTAGE_MAX_V)
    current_a: float = Field(ge=-PACK_CURRENT_MAX_A, le=PACK_CURRENT_MAX_A)
    power_kw: float = Field(ge=-POWER_MAX_KW, le=POWER_MAX_KW)
    temp_c_min: float = TempC
    temp_c_max: float = TempC
    energy_kwh: float = Field(
        ge=0, le=ENERGY_MAX_KWH, description="Delivered since this charge began"
    )


class HealthRecord(_Record):
    battery_serial: str = Serial
    soh_pct: float = Field(ge=0, le=100)
    internal_resistance_mohm: float = Field(ge=0, le=RESISTANCE_MAX_MOHM)
    cell_voltage_min_v: float = Field(ge=0, le=CELL_VOLTAGE_MAX_V)
    cell_voltage_max_v: float = Field(ge=0, le=CELL_VOLTAGE_MAX_V)
    temp_c_max: float = TempC
    cycle_count: int = Field(ge=0, le=CYCLE_COUNT_MAX)


class CapacityMethod(StrEnum):
    full_charge = "full_charge"
    full_discharge = "full_discharge"
    partial_estimate = "partial_estimate"


class CapacityRecord(_Record):
    battery_serial: str = Serial
    capacity_kwh: float = Field(ge=0, le=ENERGY_MAX_KWH)
    capacity_ah: float = Field(ge=0, le=CAPACITY_MAX_AH)
    method: CapacityMethod
    temp_c: float = TempC


class SlotState(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    slot: int = Field(ge=1, le=SLOT_MAX)
    state: Literal["empty", "charging", "ready", "fault", "disabled"]
    battery_serial: str | None = Field(default=None, min_length=1, max_length=64)


class StationStatus(BaseModel):
    """Heartbeat, published retained; the Last Will is `{"online": false}` without `ts`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    online: bool
    # Optional because a Last Will is composed at connect time, when its ts would be stale.
    ts: AwareDatetime | None = None
    slots: list[SlotState] = Field(default_factory=list)

    @property
    def extra(self) -> dict[str, Any] | None:
        return dict(self.model_extra) if self.model_extra else None


class VehicleTelemetry(_Record):
    battery_serial: str = Serial
    soc_pct: float = SocPct
    odometer_km: float = Field(ge=0, le=ODOMETER_MAX_KM)
    pack_voltage_v: float = Field(ge=0, le=PACK_VOLTAGE_MAX_V)
    pack_current_a: float = Field(ge=-PACK_CURRENT_MAX_A, le=PACK_CURRENT_MAX_A)
    temp_c_max: float = TempC
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


RECORD_MODELS: dict[RecordKind, type[BaseModel]] = {
    RecordKind.charging: ChargingSample,
    RecordKind.health: HealthRecord,
    RecordKind.capacity: CapacityRecord,
    RecordKind.status: StationStatus,
    RecordKind.vehicle: VehicleTelemetry,
}


# ---- topics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicIdentity:
    kind: RecordKind
    station_code: str | None = None
    vin: str | None = None


def station_topic(station_code: str, kind: RecordKind, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    if kind not in STATION_KINDS:
        raise ValueError(f"{kind} is not a station record kind")
    return f"{prefix}/stations/{station_code}/{kind.value}"


def vehicle_topic(vin: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    return f"{prefix}/vehicles/{vin}/{RecordKind.vehicle.value}"


def subscription_filters(prefix: str = DEFAULT_TOPIC_PREFIX) -> list[str]:
    return [f"{prefix}/stations/+/+", f"{prefix}/vehicles/+/{RecordKind.vehicle.value}"]


def parse_topic(topic: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> TopicIdentity | None:
    """None for a topic outside the contract."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) != 3 or not _IDENTIFIER.match(parts[1]):
        return None
    root, identity, leaf = parts
    if root == "stations":
        try:
            kind = RecordKind(leaf)
        except ValueError:
            return None
        return TopicIdentity(kind, station_code=identity) if kind in STATION_KINDS else None
    if root == "vehicles" and leaf == RecordKind.vehicle.value:
        return TopicIdentity(RecordKind.vehicle, vin=identity)
    return None


# ---- payloads -----------------------------------------------------------------------------


class PayloadError(ValueError):
    """A message or record that breaks the contract; `reason` is a small fixed vocabulary."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Pydantic error types that mean "well-formed, but physically impossible".
# int_parsing_size: an integer beyond what pydantic parses (10**30 cycles) is out of range too.
_RANGE_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "int_parsing_size",
    "finite_number",
}


def classify_validation_error(exc: ValidationError) -> PayloadError:
    errors = exc.errors(include_url=False, include_input=False)
    reason = "impossible_value" if all(e["type"] in _RANGE_ERRORS for e in errors) else "schema"
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in errors)
    return PayloadError(reason, detail[:1000])


def split_records(payload: bytes) -> tuple[list[Any], bool]:
    """The raw record objects of a message (one record, or {"records": [...]}) and whether
    the message was a batch."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("not_json", str(exc)[:500]) from exc
    if isinstance(document, dict) and "records" in document:
        records = document["records"]
        if not isinstance(records, list) or not records:
            raise PayloadError("schema", "records: must be a non-empty list")
        if len(records) > MAX_RECORDS_PER_MESSAGE:
            raise PayloadError(
                "too_many_records",
                f"{len(records)} records; at most {MAX_RECORDS_PER_MESSAGE} per message",
            )
        return list(records), True
    if isinstance(document, dict):
        return [document], False
    raise PayloadError("schema", "payload must be a JSON object")


def validate_record(kind: RecordKind, raw: Any) -> BaseModel:
    if not isinstance(raw, dict):
        raise PayloadError("schema", "record must be a JSON object")
    try:
        return RECORD_MODELS[kind].model_validate(raw)
    except ValidationError as exc:
        raise classify_validation_error(exc) from exc


def encode(records: list[BaseModel]) -> bytes:
    """A device's payload: a bare record when there is one, a batch otherwise."""
    bodies = [r.model_dump(mode="json", exclude_none=True) for r in records]
    return orjson.dumps(bodies[0] if len(bodies) == 1 else {"records": bodies})
