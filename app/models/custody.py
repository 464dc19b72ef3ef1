import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models.base import id_column, pg_enum
from app.models.enums import BatteryState, CustodyCause, LocationKind


class CustodyEvent(Base):
    """Append-only: one row for every change of a battery's location or lifecycle state."""

    __tablename__ = "custody_events"
    __table_args__ = (Index("ix_custody_events_battery_id_at", "battery_id", "at", "id"),)

    id: Mapped[int] = id_column()
    battery_id: Mapped[int] = mapped_column(ForeignKey("batteries.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cause: Mapped[CustodyCause] = mapped_column(pg_enum(CustodyCause, "custody_cause"))
    from_kind: Mapped[LocationKind | None] = mapped_column(pg_enum(LocationKind, "location_kind"))
    from_slot_id: Mapped[int | None] = mapped_column(ForeignKey("slots.id", ondelete="SET NULL"))
    from_vehicle_id: Mapped[int | None] = mapped_column(
        ForeignKey("vehicles.id", ondelete="SET NULL")
    )
    to_kind: Mapped[LocationKind] = mapped_column(pg_enum(LocationKind, "location_kind"))
    to_slot_id: Mapped[int | None] = mapped_column(ForeignKey("slots.id", ondelete="SET NULL"))
    to_vehicle_id: Mapped[int | None] = mapped_column(
        ForeignKey("vehicles.id", ondelete="SET NULL")
    )
    state_from: Mapped[BatteryState | None] = mapped_column(pg_enum(BatteryState, "battery_state"))
    state_to: Mapped[BatteryState] = mapped_column(pg_enum(BatteryState, "battery_state"))
    swap_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("swap_events.id", ondelete="SET NULL")
    )
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(Text)
