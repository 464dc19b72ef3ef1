from datetime import date, datetime

from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base
from app.models.base import created_at_column, id_column, pg_enum, updated_at_column
from app.models.enums import BatteryState, LocationKind
from app.models.organization import Organization
from app.models.pack_type import PackType
from app.models.station import Slot
from app.models.vehicle import Vehicle


class Battery(Base):
    """A battery's location lives in this one row, so it can never be in two places.

    The check constraint ties location_kind to exactly one of slot_id / vehicle_id, and the
    unique indexes keep a slot or a vehicle from holding two batteries.
    """

    __tablename__ = "batteries"
    __table_args__ = (
        CheckConstraint(
            "(location_kind = 'slot' AND slot_id IS NOT NULL AND vehicle_id IS NULL)"
            " OR (location_kind = 'vehicle' AND vehicle_id IS NOT NULL AND slot_id IS NULL)"
            " OR (location_kind IN ('warehouse', 'in_transit')"
            " AND slot_id IS NULL AND vehicle_id IS NULL)",
            name="one_location",
        ),
        CheckConstraint("soc_pct IS NULL OR soc_pct BETWEEN 0 AND 100", name="soc_range"),
        CheckConstraint("soh_pct IS NULL OR soh_pct BETWEEN 0 AND 100", name="soh_range"),
        CheckConstraint("equivalent_full_cycles >= 0", name="cycles_nonnegative"),
        CheckConstraint(
            "soh_source IN ('registration', 'health_record', 'swap')", name="soh_source_known"
        ),
        CheckConstraint(
            "cycles_source IN ('registration', 'health_record')", name="cycles_source_known"
        ),
        CheckConstraint(
            "(registered_energy_throughput_kwh IS NULL OR registered_energy_throughput_kwh >= 0)"
            " AND (registered_capacity_throughput_ah IS NULL"
            " OR registered_capacity_throughput_ah >= 0)",
            name="registered_throughput_nonnegative",
        ),
        CheckConstraint(
            "state <> 'retired' OR location_kind IN ('warehouse', 'in_transit')",
            name="retired_not_in_use",
        ),
        Index("uq_batteries_slot_id", "slot_id", unique=True),
        Index("uq_batteries_vehicle_id", "vehicle_id", unique=True),
        Index("ix_batteries_oem_id", "oem_id"),
    )

    id: Mapped[int] = id_column()
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    pack_type_id: Mapped[int] = mapped_column(ForeignKey("pack_types.id", ondelete="RESTRICT"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"))
    oem_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"))
    manufactured_on: Mapped[date | None] = mapped_column(Date)
    state: Mapped[BatteryState] = mapped_column(
        pg_enum(BatteryState, "battery_state"), default=BatteryState.in_service
    )
    location_kind: Mapped[LocationKind] = mapped_column(
        pg_enum(LocationKind, "location_kind"), default=LocationKind.warehouse
    )
    slot_id: Mapped[int | None] = mapped_column(ForeignKey("slots.id", ondelete="RESTRICT"))
    vehicle_id: Mapped[int | None] = mapped_column(ForeignKey("vehicles.id", ondelete="RESTRICT"))
    location_note: Mapped[str | None] = mapped_column(String(200))
    soc_pct: Mapped[float | None] = mapped_column(Double)
    soh_pct: Mapped[float | None] = mapped_column(Double)
    equivalent_full_cycles: Mapped[float] = mapped_column(Double, default=0.0, server_default="0")
    # Each reading keeps the time it was taken, and a reading replaces a field only when it is
    # at least as new as that field's time (app/ingest/derived.py, the swap function): the
    # fields arrive from different records at different rates. NULL for a value given at
    # registration, which any device reading replaces.
    soc_measured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    soh_measured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    soh_source: Mapped[str | None] = mapped_column(String(16))
    cycles_measured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cycles_source: Mapped[str | None] = mapped_column(String(16))
    # The newest of the per-field times.
    readings_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the battery had done before it was registered, when the registrant knew it.
    registered_energy_throughput_kwh: Mapped[float | None] = mapped_column(Double)
    registered_capacity_throughput_ah: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    pack_type: Mapped[PackType] = relationship(lazy="raise")
    owner: Mapped[Organization] = relationship(foreign_keys=[owner_id], lazy="raise")
    oem: Mapped[Organization | None] = relationship(foreign_keys=[oem_id], lazy="raise")
    slot: Mapped[Slot | None] = relationship(lazy="raise")
    vehicle: Mapped[Vehicle | None] = relationship(lazy="raise")
