from datetime import datetime

from sqlalchemy import CheckConstraint, Column, ForeignKey, Numeric, String, Table
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base
from app.models.base import created_at_column, id_column
from app.models.organization import Organization

vehicle_model_pack_types = Table(
    "vehicle_model_pack_types",
    Base.metadata,
    Column(
        "vehicle_model_id", ForeignKey("vehicle_models.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("pack_type_id", ForeignKey("pack_types.id", ondelete="RESTRICT"), primary_key=True),
)


class PackType(Base):
    """A battery standard; one pack type may serve several OEMs' models."""

    __tablename__ = "pack_types"
    __table_args__ = (
        CheckConstraint("nominal_energy_kwh > 0", name="energy_positive"),
        CheckConstraint("nominal_capacity_ah > 0", name="capacity_positive"),
        CheckConstraint("nominal_voltage_v > 0", name="voltage_positive"),
    )

    id: Mapped[int] = id_column()
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    chemistry: Mapped[str] = mapped_column(String(32))
    nominal_energy_kwh: Mapped[float] = mapped_column(Numeric(10, 3, asdecimal=False))
    nominal_capacity_ah: Mapped[float] = mapped_column(Numeric(10, 3, asdecimal=False))
    nominal_voltage_v: Mapped[float] = mapped_column(Numeric(10, 3, asdecimal=False))
    created_at: Mapped[datetime] = created_at_column()


class VehicleModel(Base):
    __tablename__ = "vehicle_models"
    id: Mapped[int] = id_column()
    oem_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"))
    # Globally unique so that a model is addressed by one key: /v1/vehicle-models/{code}.
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()

    oem: Mapped[Organization] = relationship(lazy="raise")
    pack_types: Mapped[list[PackType]] = relationship(
        secondary=vehicle_model_pack_types, lazy="raise"
    )
