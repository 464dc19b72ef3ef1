from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base
from app.models.base import created_at_column, id_column, pg_enum, updated_at_column
from app.models.enums import StationStatus
from app.models.organization import Organization


class Station(Base):
    __tablename__ = "stations"
    __table_args__ = (
        CheckConstraint("latitude BETWEEN -90 AND 90", name="latitude_range"),
        CheckConstraint("longitude BETWEEN -180 AND 180", name="longitude_range"),
        CheckConstraint("target_soc_pct BETWEEN 0 AND 100", name="target_soc_range"),
        CheckConstraint("code ~ '^[A-Za-z0-9][A-Za-z0-9_.-]*$'", name="code_format"),
    )

    id: Mapped[int] = id_column()
    operator_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    latitude: Mapped[float] = mapped_column(Double)
    longitude: Mapped[float] = mapped_column(Double)
    timezone: Mapped[str] = mapped_column(String(64))
    status: Mapped[StationStatus] = mapped_column(
        pg_enum(StationStatus, "station_status"), default=StationStatus.active
    )
    target_soc_pct: Mapped[float] = mapped_column(Double, default=90.0)
    # Connectivity, maintained by the ingest from status messages and the Last Will.
    online: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    operator: Mapped[Organization] = relationship(lazy="raise")
    slots: Mapped[list["Slot"]] = relationship(
        back_populates="station", lazy="raise", order_by="Slot.number"
    )


class Slot(Base):
    __tablename__ = "slots"
    __table_args__ = (
        UniqueConstraint("station_id", "number"),
        CheckConstraint("number >= 1", name="number_positive"),
    )

    id: Mapped[int] = id_column()
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    # As the station last reported it over OCPP (StatusNotification's connectorStatus:
    # Available, Occupied, Reserved, Unavailable, Faulted); null when it never did.
    connector_status: Mapped[str | None] = mapped_column(String(16))
    connector_status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # An open problem the station reported over OCPP (NotifyEvent's Problem variable of a
    # component on this EVSE): its techCode (else the component's name) and techInfo; null
    # when none or cleared. fault_at: when the latest report, raised or cleared, was made.
    fault_code: Mapped[str | None] = mapped_column(String(50))
    fault_info: Mapped[str | None] = mapped_column(String(500))
    fault_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    station: Mapped[Station] = relationship(back_populates="slots", lazy="raise")
