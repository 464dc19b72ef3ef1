from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base
from app.models.base import created_at_column, id_column, updated_at_column
from app.models.organization import Organization
from app.models.pack_type import VehicleModel


class Vehicle(Base):
    """The battery a vehicle carries is recorded on the battery (batteries.vehicle_id)."""

    __tablename__ = "vehicles"

    id: Mapped[int] = id_column()
    vin: Mapped[str] = mapped_column(String(17), unique=True)
    oem_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    model_id: Mapped[int] = mapped_column(ForeignKey("vehicle_models.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    oem: Mapped[Organization] = relationship(lazy="raise")
    model: Mapped[VehicleModel] = relationship(lazy="raise")
