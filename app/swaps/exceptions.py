from app.core.errors import AppError, NotFound


class StationNotFound(NotFound):
    code = "StationNotFound"


class SwapNotFound(NotFound):
    code = "SwapNotFound"


class SwapRejected(AppError):
    """Not raised: a rejection is recorded and committed, then rendered with this status."""

    status = 409
    code = "SwapRejected"
    title = "Swap rejected"


# Reason codes follow OCPP 2.1's battery-swap vocabulary where it has one; the status says
# whether the request itself is wrong (422) or the state of the world forbids it (409).
REASON_STATUS: dict[str, int] = {
    "BatteryUnknown": 422,
    "VehicleUnknown": 422,
    "BatteryType": 422,
    "BatteryMismatch": 409,
    "BatteryNotAtStation": 409,
    "BatteryDamaged": 409,
    "BatterySoC": 409,
    "BatterySoHLow": 409,
    "NoBatteryAvailable": 409,
    "StationUnavailable": 409,
}
