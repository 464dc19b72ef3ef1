from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class BatteryTelemetryKind(StrEnum):
    charging = "charging"
    health = "health"
    capacity = "capacity"


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ChargingSampleRead(_Read):
    kind: BatteryTelemetryKind = BatteryTelemetryKind.charging
    battery_serial: str
    ts: datetime
    station_code: str | None
    slot: int
    soc_pct: float
    voltage_v: float
    current_a: float
    power_kw: float
    temp_c_min: float
    temp_c_max: float
    energy_kwh: float
    extra: dict[str, Any] | None


class HealthRecordRead(_Read):
    kind: BatteryTelemetryKind = BatteryTelemetryKind.health
    battery_serial: str
    ts: datetime
    station_code: str | None
    soh_pct: float
    internal_resistance_mohm: float
    cell_voltage_min_v: float
    cell_voltage_max_v: float
    temp_c_max: float
    cycle_count: int
    extra: dict[str, Any] | None


class CapacityRecordRead(_Read):
    kind: BatteryTelemetryKind = BatteryTelemetryKind.capacity
    battery_serial: str
    ts: datetime
    station_code: str | None
    capacity_kwh: float
    capacity_ah: float
    method: str
    temp_c: float
    extra: dict[str, Any] | None


class VehicleTelemetryRead(_Read):
    vin: str
    ts: datetime
    # Null for OEM keys when the battery is another OEM's.
    battery_serial: str | None
    soc_pct: float
    odometer_km: float
    pack_voltage_v: float
    pack_current_a: float
    temp_c_max: float
    lat: float | None
    lon: float | None
    extra: dict[str, Any] | None


class ChargingSessionRead(_Read):
    battery_serial: str
    station_code: str | None
    slot: int
    started_at: datetime
    ended_at: datetime
    soc_from_pct: float
    soc_to_pct: float
    energy_kwh: float
    peak_temp_c: float
    sample_count: int


class DeadLetterRead(_Read):
    id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    record_index: int | None
    station_code: str | None
    vin: str | None
    payload_bytes: int
    # The stored (possibly truncated) payload, decoded as UTF-8 with replacement characters.
    payload: str
