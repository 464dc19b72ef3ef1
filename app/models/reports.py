"""What the OEM reports read instead of raw telemetry.

battery_daily holds one row per battery and UTC day. The ingest adds to it from the rows each
batch newly inserted (app/ingest/aggregates.py), swaps reach it after their commit through
swap_rollup_queue (a trigger on swap_events queues each swap, so the swaps domain stays
unaware of reports; app/rollups/swap_rollup.py adds the queued swaps in batches), and
app/rollups/rebuild.py recomputes any date range from the raw tables. Every column is
either a sum, a min/max, or a "first"/"last" value carried with the timestamp that decides
it, so that adding rows in any order gives the same result as recomputing.

Keyed by serial like the telemetry tables (no foreign key): aggregates must outlive a
battery's deregistration, as the records they summarize do.
"""

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models.base import id_column


def _zero() -> Mapped[float]:
    return mapped_column(Double, nullable=False, server_default="0")


def _count() -> Mapped[int]:
    return mapped_column(Integer, nullable=False, server_default="0")


class BatteryDaily(Base):
    __tablename__ = "battery_daily"
    __table_args__ = (
        PrimaryKeyConstraint("battery_serial", "day"),
        # Fleet-wide reports select a window of days across every battery.
        Index("ix_battery_daily_day", "day"),
    )

    battery_serial: Mapped[str] = mapped_column(String(64))
    day: Mapped[date] = mapped_column(Date)

    # ---- charging samples (station side)
    charging_samples: Mapped[int] = _count()
    charging_sessions: Mapped[int] = _count()
    energy_charged_kwh: Mapped[float] = _zero()
    charged_ah: Mapped[float] = _zero()
    # Sum and count of (temp_c_max - temp_c_min) while charging: a hot cell shows as a spread.
    temp_spread_sum_c: Mapped[float] = _zero()
    # ---- vehicle telemetry (road side)
    vehicle_samples: Mapped[int] = _count()
    energy_discharged_kwh: Mapped[float] = _zero()
    discharged_ah: Mapped[float] = _zero()
    # ---- temperature, from both sources (sample-interval weighted, see aggregates)
    seconds_above_45c: Mapped[float] = _zero()
    seconds_below_0c: Mapped[float] = _zero()
    temp_max_c: Mapped[float | None] = mapped_column(Double)
    # ---- health records
    health_records: Mapped[int] = _count()
    health_first_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    soh_first_pct: Mapped[float | None] = mapped_column(Double)
    resistance_first_mohm: Mapped[float | None] = mapped_column(Double)
    health_last_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    soh_last_pct: Mapped[float | None] = mapped_column(Double)
    resistance_last_mohm: Mapped[float | None] = mapped_column(Double)
    cycles_last: Mapped[float | None] = mapped_column(Double)
    soh_min_pct: Mapped[float | None] = mapped_column(Double)
    soh_max_pct: Mapped[float | None] = mapped_column(Double)
    cell_imbalance_max_mv: Mapped[float | None] = mapped_column(Double)
    # ---- capacity records, with the sums a least-squares fit of capacity_ah needs, over
    # x = days since FIT_EPOCH (n = capacity_records, sum y = capacity_sum_ah) and over
    # x = equivalent full cycles (only records whose cycle count is known: fit_cycles_n).
    capacity_records: Mapped[int] = _count()
    capacity_sum_ah: Mapped[float] = _zero()
    capacity_last_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    capacity_last_ah: Mapped[float | None] = mapped_column(Double)
    capacity_last_kwh: Mapped[float | None] = mapped_column(Double)
    fit_days_sx: Mapped[float] = _zero()
    fit_days_sxx: Mapped[float] = _zero()
    fit_days_sxy: Mapped[float] = _zero()
    fit_days_syy: Mapped[float] = _zero()
    fit_cycles_n: Mapped[int] = _count()
    fit_cycles_sx: Mapped[float] = _zero()
    fit_cycles_sy: Mapped[float] = _zero()
    fit_cycles_sxx: Mapped[float] = _zero()
    fit_cycles_sxy: Mapped[float] = _zero()
    fit_cycles_syy: Mapped[float] = _zero()
    # ---- swaps (added by the swap roll-up, after the swaps' commits)
    swaps_in: Mapped[int] = _count()
    swaps_out: Mapped[int] = _count()
    # Swaps refused because of this battery's state or health (it was the one to install).
    health_rejections: Mapped[int] = _count()

    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BatteryMonthly(Base):
    """battery_daily summed per battery and calendar month (month = its first day), kept by
    triggers on battery_daily (migration d5e9f3a2b8c4) and recomputed by rebuild_aggregates.
    Only the mergeable columns: sums, maxima and the first day; "first"/"last" picks stay
    in battery_daily, where one index probe per battery finds them."""

    __tablename__ = "battery_monthly"
    __table_args__ = (PrimaryKeyConstraint("battery_serial", "month"),)

    battery_serial: Mapped[str] = mapped_column(String(64))
    month: Mapped[date] = mapped_column(Date)
    days: Mapped[int] = _count()
    charging_samples: Mapped[int] = _count()
    charging_sessions: Mapped[int] = _count()
    capacity_records: Mapped[int] = _count()
    fit_cycles_n: Mapped[int] = _count()
    swaps_in: Mapped[int] = _count()
    swaps_out: Mapped[int] = _count()
    health_rejections: Mapped[int] = _count()
    health_records: Mapped[int] = _count()
    energy_charged_kwh: Mapped[float] = _zero()
    charged_ah: Mapped[float] = _zero()
    temp_spread_sum_c: Mapped[float] = _zero()
    energy_discharged_kwh: Mapped[float] = _zero()
    discharged_ah: Mapped[float] = _zero()
    seconds_above_45c: Mapped[float] = _zero()
    seconds_below_0c: Mapped[float] = _zero()
    capacity_sum_ah: Mapped[float] = _zero()
    fit_days_sx: Mapped[float] = _zero()
    fit_days_sxx: Mapped[float] = _zero()
    fit_days_sxy: Mapped[float] = _zero()
    fit_days_syy: Mapped[float] = _zero()
    fit_cycles_sx: Mapped[float] = _zero()
    fit_cycles_sy: Mapped[float] = _zero()
    fit_cycles_sxx: Mapped[float] = _zero()
    fit_cycles_sxy: Mapped[float] = _zero()
    fit_cycles_syy: Mapped[float] = _zero()
    # Least-squares sums of the daily cell_imbalance_max_mv over x = day - 2020-01-01.
    imbalance_n: Mapped[int] = _count()
    imbalance_sx: Mapped[float] = _zero()
    imbalance_sy: Mapped[float] = _zero()
    imbalance_sxx: Mapped[float] = _zero()
    imbalance_sxy: Mapped[float] = _zero()
    temp_max_c: Mapped[float | None] = mapped_column(Double)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_day: Mapped[date | None] = mapped_column(Date)


class OemSwapDaily(Base):
    """Swap attempts per OEM (of the vehicle, else of the removed battery), day, outcome and
    reason; oem_id 0 collects swaps no OEM can be named for. Rolled up from
    swap_rollup_queue after the swaps commit; readers add the queued swaps, so counts are
    exact at any moment."""

    __tablename__ = "oem_swap_daily"
    __table_args__ = (PrimaryKeyConstraint("oem_id", "day", "outcome", "reason_code"),)

    oem_id: Mapped[int] = mapped_column(BigInteger)
    day: Mapped[date] = mapped_column(Date)
    outcome: Mapped[str] = mapped_column(String(16))
    # '' for completed swaps, which have no reason.
    reason_code: Mapped[str] = mapped_column(String(64))
    swaps: Mapped[int] = _count()


# Swaps committed but not yet added to oem_swap_daily and battery_daily. Append-only for the
# swaps (a trigger on swap_events inserts the id; no index, no key to contend on), emptied by
# the roll-up in the same transaction that adds the swaps to the aggregates. A swap used to
# add 1 to its OEM's row of the day inside its own transaction: every swap of an OEM then
# waited for the previous one's commit (issue 12).
swap_rollup_queue = Table(
    "swap_rollup_queue",
    Base.metadata,
    Column("swap_id", UUID(as_uuid=True), nullable=False),
)


class BatteryRecommendation(Base):
    """A quarantine recommendation from anomaly detection; an operator decides, the system
    never quarantines by itself. At most one open recommendation per battery and kind."""

    __tablename__ = "battery_recommendations"
    __table_args__ = (
        Index(
            "uq_battery_recommendations_open",
            "battery_id",
            "kind",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )

    id: Mapped[int] = id_column()
    battery_id: Mapped[int] = mapped_column(ForeignKey("batteries.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    value: Mapped[float] = mapped_column(Double)
    cohort_median: Mapped[float] = mapped_column(Double)
    # Null for below_soh_floor: the fleet's rule, no cohort statistic.
    robust_z: Mapped[float | None] = mapped_column(Double)
    window_from: Mapped[date] = mapped_column(Date)
    window_to: Mapped[date] = mapped_column(Date)
    detected_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AnomalySnapshot(Base):
    """The fleet's anomalies and energy charged per OEM over one window, as the fleet summary
    lists them, with a
    fingerprint of the battery_monthly months and the registry they were computed from. The
    summary recomputes (and replaces) a snapshot whose fingerprint no longer matches, so a
    snapshot is a cache that is never stale, only missing."""

    __tablename__ = "report_anomaly_snapshots"
    __table_args__ = (PrimaryKeyConstraint("window_from", "window_to"),)

    window_from: Mapped[date] = mapped_column(Date)
    window_to: Mapped[date] = mapped_column(Date)
    fingerprint: Mapped[str] = mapped_column(Text)
    # [{"oem_id": ..., **Anomaly}] for the whole fleet; a scope filters by oem_id.
    anomalies: Mapped[list[dict[str, object]]] = mapped_column(JSONB)
    # {"<oem_id>": energy charged in kWh over the window} ("" for batteries without an OEM).
    energy_by_oem: Mapped[dict[str, float]] = mapped_column(JSONB)
    computed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
