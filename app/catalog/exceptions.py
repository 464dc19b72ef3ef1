from app.core.errors import AppError


class PackTypeNotFound(AppError):
    status = 404
    code = "PackTypeNotFound"
    title = "Pack type not found"


class PackTypeExists(AppError):
    status = 409
    code = "PackTypeExists"
    title = "A pack type with this code already exists"


class UnknownPackType(AppError):
    """A request body names pack types that do not exist."""

    status = 422
    code = "UnknownPackType"
    title = "Referenced pack type does not exist"


class VehicleModelNotFound(AppError):
    status = 404
    code = "VehicleModelNotFound"
    title = "Vehicle model not found"


class VehicleModelExists(AppError):
    status = 409
    code = "VehicleModelExists"
    title = "A vehicle model with this code already exists"
