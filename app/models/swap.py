import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Double, ForeignKey, Index, String, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models.base import created_at_column, pg_enum
from app.models.enums import SwapOutcome


class SwapEvent(Base):
    """Every swap attempt, completed or not; serials and VIN are kept as given for rejections."""

    __tablename__ = "swap_events"
    __table_args__ = (
        CheckConstraint(
            "outcome = 'completed' OR reason_code IS NOT NULL", name="failure_has_reason"
        ),
        CheckConstraint(
            "outcome <> 'completed' OR (removed_battery_id IS NOT NULL"
            " AND installed_battery_id IS NOT NULL AND vehicle_id IS NOT NULL)",
            name="completed_has_batteries",
        ),
        CheckConstraint("finished_at IS NULL OR finished_at >= started_at", name="time_order"),
        Index("ix_swap_events_station_id_started_at", "station_id", "started_at"),
        Index("ix_swap_events_vehicle_id_started_at", "vehicle_id", "started_at"),
        Index("ix_swap_events_removed_battery_id", "removed_battery_id"),
        Index("ix_swap_events_installed_battery_id", "installed_battery_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id", ondelete="RESTRICT"))
    vehicle_id: Mapped[int | None] = mapped_column(ForeignKey("vehicles.id", ondelete="RESTRICT"))
    vin: Mapped[str] = mapped_column(String(17))
    removed_battery_id: Mapped[int | None] = mapped_column(
        ForeignKey("batteries.id", ondelete="RESTRICT")
    )
    removed_battery_serial: Mapped[str | None] = mapped_column(String(64))
    removed_soc_pct: Mapped[float | None] = mapped_column(Double)
    removed_soh_pct: Mapped[float | None] = mapped_column(Double)
    removed_to_slot_id: Mapped[int | None] = mapped_column(
        ForeignKey("slots.id", ondelete="RESTRICT")
    )
    installed_battery_id: Mapped[int | None] = mapped_column(
        ForeignKey("batteries.id", ondelete="RESTRICT")
    )
    installed_battery_serial: Mapped[str | None] = mapped_column(String(64))
    installed_soc_pct: Mapped[float | None] = mapped_column(Double)
    installed_soh_pct: Mapped[float | None] = mapped_column(Double)
    installed_from_slot_id: Mapped[int | None] = mapped_column(
        ForeignKey("slots.id", ondelete="RESTRICT")
    )
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[SwapOutcome] = mapped_column(pg_enum(SwapOutcome, "swap_outcome"))
    reason_code: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()


class IdempotencyRecord(Base):
    """The first response to a request sent with an Idempotency-Key, replayed on retries."""

    __tablename__ = "idempotency_records"

    # Keys are scoped by the API key that used them, so two clients can never collide.
    api_key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
