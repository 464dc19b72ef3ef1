"""Telemetry written by the MQTT ingest.

The record tables are partitioned by month on `ts` (RANGE), so retention drops whole
partitions; the partition key must be part of every unique key, hence the natural keys
(battery_serial, ts) and (vin, ts) as primary keys, which also deduplicate redeliveries.
Partitions themselves are created by the migration and by app/ingest/partitions.py.

Serials and VINs are stored as text without foreign keys on purpose: these are the
highest-volume tables, the ingest checks every identity against the registry before it
writes, and records must outlive a battery's deregistration for the OEM's history.
"""

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models.base import JSONDict, id_column

PARTITION_BY_MONTH = {"postgresql_partition_by": "RANGE (ts)"}


def _received_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class ChargingSample(Base):
    __tablename__ = "charging_samples"
    __table_args__ = (
        PrimaryKeyConstraint("battery_serial", "ts"),
        Index("ix_charging_samples_station_id_ts", "station_id", "ts"),
        PARTITION_BY_MONTH,
    )

    battery_serial: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    station_id: Mapped[int] = mapped_column(BigInteger)
    slot: Mapped[int] = mapped_column(Integer)
    soc_pct: Mapped[float] = mapped_column(Double)
    voltage_v: Mapped[float] = mapped_column(Double)
    current_a: Mapped[float] = mapped_column(Double)
    power_kw: Mapped[float] = mapped_column(Double)
    temp_c_min: Mapped[float] = mapped_column(Double)
    temp_c_max: Mapped[float] = mapped_column(Double)
    energy_kwh: Mapped[float] = mapped_column(Double)
    extra: Mapped[JSONDict | None] = mapped_column(JSONB)
    received_at: Mapped[datetime] = _received_at()


class HealthRecord(Base):
    __tablename__ = "health_records"
    __table_args__ = (PrimaryKeyConstraint("battery_serial", "ts"), PARTITION_BY_MONTH)

    battery_serial: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    station_id: Mapped[int] = mapped_column(BigInteger)
    soh_pct: Mapped[float] = mapped_column(Double)
    internal_resistance_mohm: Mapped[float] = mapped_column(Double)
    cell_voltage_min_v: Mapped[float] = mapped_column(Double)
    cell_voltage_max_v: Mapped[float] = mapped_column(Double)
    temp_c_max: Mapped[float] = mapped_column(Double)
    cycle_count: Mapped[int] = mapped_column(Integer)
    extra: Mapped[JSONDict | None] = mapped_column(JSONB)
    received_at: Mapped[datetime] = _received_at()


class CapacityRecord(Base):
    __tablename__ = "capacity_records"
    __table_args__ = (PrimaryKeyConstraint("battery_serial", "ts"), PARTITION_BY_MONTH)

    battery_serial: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    station_id: Mapped[int] = mapped_column(BigInteger)
    capacity_kwh: Mapped[float] = mapped_column(Double)
    capacity_ah: Mapped[float] = mapped_column(Double)
    method: Mapped[str] = mapped_column(String(32))
    temp_c: Mapped[float] = mapped_column(Double)
    extra: Mapped[JSONDict | None] = mapped_column(JSONB)
    received_at: Mapped[datetime] = _received_at()


class VehicleTelemetry(Base):
    __tablename__ = "vehicle_telemetry"
    __table_args__ = (
        PrimaryKeyConstraint("vin", "ts"),
        # OEMs ask for a battery's history across the vehicles that carried it.
        Index("ix_vehicle_telemetry_battery_serial_ts", "battery_serial", "ts"),
        PARTITION_BY_MONTH,
    )

    vin: Mapped[str] = mapped_column(String(17))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    battery_serial: Mapped[str] = mapped_column(String(64))
    soc_pct: Mapped[float] = mapped_column(Double)
    odometer_km: Mapped[float] = mapped_column(Double)
    pack_voltage_v: Mapped[float] = mapped_column(Double)
    pack_current_a: Mapped[float] = mapped_column(Double)
    temp_c_max: Mapped[float] = mapped_column(Double)
    lat: Mapped[float | None] = mapped_column(Double)
    lon: Mapped[float | None] = mapped_column(Double)
    extra: Mapped[JSONDict | None] = mapped_column(JSONB)
    received_at: Mapped[datetime] = _received_at()


class DeadLetter(Base):
    """A message or record the ingest refused, kept for operators to inspect."""

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_received_at", "received_at", "id"),)

    id: Mapped[int] = id_column()
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    topic: Mapped[str] = mapped_column(Text)
    # Truncated to a setting's length; payload_bytes keeps the original size.
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    payload_bytes: Mapped[int] = mapped_column(Integer)
    # Index of the refused record inside a {"records": [...]} message; null for the whole message.
    record_index: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    station_code: Mapped[str | None] = mapped_column(String(64))
    vin: Mapped[str | None] = mapped_column(String(17))


class ChargingSession(Base):
    """Consecutive charging samples of one battery in one slot, rolled up by the ingest."""

    __tablename__ = "charging_sessions"
    __table_args__ = (
        UniqueConstraint("battery_serial", "started_at"),
        CheckConstraint("ended_at >= started_at", name="time_order"),
        CheckConstraint("sample_count >= 1", name="has_samples"),
    )

    id: Mapped[int] = id_column()
    battery_serial: Mapped[str] = mapped_column(String(64))
    station_id: Mapped[int] = mapped_column(BigInteger)
    slot: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    soc_from_pct: Mapped[float] = mapped_column(Double)
    soc_to_pct: Mapped[float] = mapped_column(Double)
    # The device counts energy from the start of its charge, so a session's energy is the
    # counter at its last sample minus the counter at its first.
    energy_start_kwh: Mapped[float] = mapped_column(Double)
    energy_end_kwh: Mapped[float] = mapped_column(Double)
    peak_temp_c: Mapped[float] = mapped_column(Double)
    sample_count: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )

    @property
    def energy_kwh(self) -> float:
        return max(0.0, self.energy_end_kwh - self.energy_start_kwh)
