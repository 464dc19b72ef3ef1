from app.core.errors import AppError


class StationNotFound(AppError):
    status = 404
    code = "StationNotFound"
    title = "Station not found"


class StationExists(AppError):
    status = 409
    code = "StationExists"
    title = "A station with this code already exists"


class OperatorCodeRequired(AppError):
    status = 422
    code = "OperatorCodeRequired"
    title = "An admin key must name the station's operator"


class SlotNotFound(AppError):
    status = 404
    code = "SlotNotFound"
    title = "Slot not found"


class TooManySlots(AppError):
    status = 422
    code = "TooManySlots"
    title = "A station has too many slots"


class SlotsChanged(AppError):
    """Two requests added slots to one station at once; the later one should retry."""

    status = 409
    code = "SlotsChanged"
    title = "The station's slots changed concurrently"
