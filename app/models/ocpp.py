"""What the OCPP 2.1 gateway (app/ocpp) keeps: station passwords, which gateway holds which
station, the token -> vehicle mapping, the swaps in progress and the custody exceptions."""

import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models.base import JSONDict, created_at_column, id_column, updated_at_column


class OcppCredential(Base):
    """The station's HTTP Basic password (OCPP security profiles 1 and 2), hashed."""

    __tablename__ = "ocpp_credentials"

    station_id: Mapped[int] = mapped_column(
        ForeignKey("stations.id", ondelete="CASCADE"), primary_key=True
    )
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()


class OcppConnection(Base):
    """A lease: the gateway instance that holds the station's one WebSocket. An instance
    renews its leases while it runs; a lease that expired (its instance died) may be taken."""

    __tablename__ = "ocpp_connections"

    station_id: Mapped[int] = mapped_column(
        ForeignKey("stations.id", ondelete="CASCADE"), primary_key=True
    )
    instance_id: Mapped[str] = mapped_column(String(100))
    connected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IdToken(Base):
    """An OCPP idToken (an RFID tag, an app's UUID) that identifies a vehicle. OCPP says
    idTokens are case-insensitive: stored lower-cased."""

    __tablename__ = "id_tokens"
    __table_args__ = (CheckConstraint("id_token = lower(id_token)", name="lower_case"),)

    id_token: Mapped[str] = mapped_column(String(255), primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(
        ForeignKey("vehicles.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = created_at_column()


class OcppSwap(Base):
    """One OCPP swap by its requestId: BatteryIn opens it, BatteryOut or BatteryOutTimeout
    closes it into a swap_events row (swap_id)."""

    __tablename__ = "ocpp_swaps"
    __table_args__ = (
        CheckConstraint("state IN ('open', 'completed', 'aborted')", name="state_known"),
    )

    station_id: Mapped[int] = mapped_column(
        ForeignKey("stations.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    id_token: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    in_serial: Mapped[str] = mapped_column(String(64))
    in_evse_id: Mapped[int] = mapped_column(Integer)
    in_soc_pct: Mapped[float] = mapped_column(Double)
    in_soh_pct: Mapped[float] = mapped_column(Double)
    in_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    swap_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("swap_events.id", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime] = updated_at_column()


class CustodyException(Base):
    """A physical swap the rules would have refused, or a place the records and the station
    disagree on: recorded as the station reported it, flagged for the operator."""

    __tablename__ = "custody_exceptions"
    __table_args__ = (Index("ix_custody_exceptions_station_id_at", "station_id", "at"),)

    id: Mapped[int] = id_column()
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason_code: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    swap_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("swap_events.id", ondelete="SET NULL")
    )
    request_id: Mapped[int | None] = mapped_column(Integer)
    battery_serial: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_at_column()


class OcppSwapRequest(Base):
    """A RequestBatterySwap an operator asked for through REST, and the station's answer. The
    request_id is OCPP's requestId: the BatterySwap events that follow carry it."""

    __tablename__ = "ocpp_swap_requests"
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'sent', 'accepted', 'rejected', 'failed')", name="state_known"
        ),
        Index("ix_ocpp_swap_requests_station_id_state", "station_id", "state"),
    )

    request_id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id", ondelete="CASCADE"))
    id_token: Mapped[str] = mapped_column(String(255))
    vin: Mapped[str] = mapped_column(String(17))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    # The station's statusInfo (reasonCode and additionalInfo), or why it got no answer.
    status_info: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OcppCommand(Base):
    """A CALL for a station that REST asked for (ChangeAvailability when a slot is disabled or
    enabled, SetVariables when the station's target SoC changes), and the station's answer."""

    __tablename__ = "ocpp_commands"
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'sent', 'accepted', 'scheduled', 'rejected', 'failed')",
            name="state_known",
        ),
        Index("ix_ocpp_commands_station_id_state", "station_id", "state"),
    )

    id: Mapped[int] = id_column()
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(64))
    payload: Mapped[JSONDict] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    status_info: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
