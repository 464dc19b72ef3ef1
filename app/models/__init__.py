"""All ORM models, imported here so that Alembic and the app see one complete metadata."""

from app.models.api_key import ApiKey
from app.models.battery import Battery
from app.models.custody import CustodyEvent
from app.models.enums import (
    BatteryState,
    CustodyCause,
    KeyRole,
    LocationKind,
    OrgRole,
    ReadingSource,
    StationStatus,
    SwapOutcome,
)
from app.models.ocpp import (
    CustodyException,
    IdToken,
    OcppCommand,
    OcppConnection,
    OcppCredential,
    OcppSwap,
    OcppSwapRequest,
)
from app.models.organization import Organization
from app.models.pack_type import PackType, VehicleModel, vehicle_model_pack_types
from app.models.reports import (
    AnomalySnapshot,
    BatteryDaily,
    BatteryMonthly,
    BatteryRecommendation,
    OemSwapDaily,
    swap_rollup_queue,
)
from app.models.station import Slot, Station
from app.models.swap import IdempotencyRecord, SwapEvent
from app.models.telemetry import (
    CapacityRecord,
    ChargingSample,
    ChargingSession,
    DeadLetter,
    HealthRecord,
    VehicleTelemetry,
)
from app.models.vehicle import Vehicle

__all__ = [
    "AnomalySnapshot",
    "ApiKey",
    "Battery",
    "BatteryDaily",
    "BatteryMonthly",
    "BatteryRecommendation",
    "BatteryState",
    "CapacityRecord",
    "ChargingSample",
    "ChargingSession",
    "CustodyCause",
    "CustodyEvent",
    "CustodyException",
    "DeadLetter",
    "HealthRecord",
    "IdToken",
    "IdempotencyRecord",
    "KeyRole",
    "LocationKind",
    "OcppCommand",
    "OcppConnection",
    "OcppCredential",
    "OcppSwap",
    "OcppSwapRequest",
    "OemSwapDaily",
    "swap_rollup_queue",
    "OrgRole",
    "Organization",
    "PackType",
    "ReadingSource",
    "Slot",
    "Station",
    "StationStatus",
    "SwapEvent",
    "SwapOutcome",
    "Vehicle",
    "VehicleModel",
    "VehicleTelemetry",
    "vehicle_model_pack_types",
]
