from app.core.errors import AppError


class VehicleNotFound(AppError):
    status = 404
    code = "VehicleNotFound"
    title = "Vehicle not found"


class VehicleExists(AppError):
    status = 409
    code = "VehicleExists"
    title = "A vehicle with this VIN already exists"


class UnknownVehicleModel(AppError):
    status = 422
    code = "UnknownVehicleModel"
    title = "Referenced vehicle model does not exist"


class ModelOemMismatch(AppError):
    status = 422
    code = "ModelOemMismatch"
    title = "A vehicle cannot change manufacturer"


class InstalledBatteryIncompatible(AppError):
    status = 409
    code = "InstalledBatteryIncompatible"
    title = "The new model does not take the battery the vehicle carries"
