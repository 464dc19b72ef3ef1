from app.core.errors import AppError, Conflict, Forbidden, NotFound, Unprocessable


class BatteryNotFound(NotFound):
    code = "BatteryNotFound"
    title = "Battery not found"


class BatterySerialTaken(Conflict):
    code = "BatterySerialTaken"
    title = "A battery with this serial already exists"


class UnknownReference(Unprocessable):
    """A code in the request body (pack type, organization, station, slot, VIN) names nothing."""

    code = "UnknownReference"
    title = "The request refers to something that does not exist"


class OrganizationRoleMismatch(Unprocessable):
    code = "OrganizationRoleMismatch"
    title = "Organization has the wrong role"


class BatteryTypeMismatch(Unprocessable):
    code = "BatteryType"
    title = "The vehicle's model does not take this battery's pack type"


class SlotOccupied(Conflict):
    code = "SlotOccupied"
    title = "The slot already holds a battery"


class SlotDisabled(Conflict):
    code = "SlotDisabled"
    title = "The slot is disabled"


class VehicleHasBattery(Conflict):
    code = "VehicleHasBattery"
    title = "The vehicle already carries a battery"


class BatteryRetired(Conflict):
    code = "BatteryRetired"
    title = "A retired battery can only be kept in a warehouse or in transit"


class BatteryQuarantined(Conflict):
    code = "BatteryQuarantined"
    title = "A quarantined battery cannot be put into a vehicle"


class BatteryInUse(Conflict):
    code = "BatteryInUse"
    title = "The battery is still in a slot or a vehicle"


class InvalidStateTransition(Conflict):
    code = "InvalidStateTransition"
    title = "The battery cannot go from its current state to the requested one"


class BatteryOutOfScope(Forbidden):
    code = "BatteryOutOfScope"
    title = "The battery is not at one of this key's stations"


class DestinationOutOfScope(Forbidden):
    code = "DestinationOutOfScope"
    title = "This key may not place a battery there"


class AdminOnlyField(Forbidden):
    code = "AdminOnlyField"
    title = "Only an admin key may change this field"


# Every error the write routes can raise, for their `responses=`.
PLACEMENT_ERRORS: tuple[type[AppError], ...] = (
    UnknownReference,
    BatteryTypeMismatch,
    SlotOccupied,
    SlotDisabled,
    VehicleHasBattery,
    DestinationOutOfScope,
)
