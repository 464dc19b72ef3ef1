import enum


class OrgRole(enum.StrEnum):
    operator = "operator"
    oem = "oem"
    owner = "owner"


class KeyRole(enum.StrEnum):
    admin = "admin"
    operator = "operator"
    oem = "oem"


class StationStatus(enum.StrEnum):
    active = "active"
    maintenance = "maintenance"
    closed = "closed"


class BatteryState(enum.StrEnum):
    in_service = "in_service"
    quarantined = "quarantined"
    retired = "retired"


class LocationKind(enum.StrEnum):
    slot = "slot"
    vehicle = "vehicle"
    warehouse = "warehouse"
    in_transit = "in_transit"


class CustodyCause(enum.StrEnum):
    registered = "registered"
    swap = "swap"
    manual_move = "manual_move"
    quarantine = "quarantine"
    release = "release"
    retire = "retire"


class SwapOutcome(enum.StrEnum):
    completed = "completed"
    rejected = "rejected"
    aborted = "aborted"


class ReadingSource(enum.StrEnum):
    """Where a battery's stored reading came from (batteries.soh_source, cycles_source)."""

    registration = "registration"
    health_record = "health_record"
    swap = "swap"
