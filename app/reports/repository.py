"""Queries of the reports: battery_daily and the registry, never the raw telemetry tables."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.orm import Session

# One battery's figures over a window of days, from its battery_daily rows (an index range
# scan per battery). "First" and "last" values are picked by the timestamps stored with them.
WINDOW_FIGURES = """
SELECT
    count(*) AS days,
    COALESCE(sum(d.energy_charged_kwh), 0) AS energy_charged_kwh,
    COALESCE(sum(d.energy_discharged_kwh), 0) AS energy_discharged_kwh,
    COALESCE(sum(d.charged_ah), 0) + COALESCE(sum(d.discharged_ah), 0) AS capacity_throughput_ah,
    COALESCE(sum(d.charging_sessions), 0) AS charging_sessions,
    COALESCE(sum(d.charging_samples), 0) AS charging_samples,
    COALESCE(sum(d.temp_spread_sum_c), 0) AS temp_spread_sum_c,
    COALESCE(sum(d.seconds_above_45c), 0) AS seconds_above_45c,
    COALESCE(sum(d.seconds_below_0c), 0) AS seconds_below_0c,
    max(d.temp_max_c) AS max_temp_c,
    (array_agg(d.soh_first_pct ORDER BY d.health_first_ts)
        FILTER (WHERE d.health_first_ts IS NOT NULL))[1] AS soh_start_pct,
    (array_agg(d.soh_last_pct ORDER BY d.health_last_ts DESC)
        FILTER (WHERE d.health_last_ts IS NOT NULL))[1] AS soh_end_pct,
    (array_agg(d.resistance_last_mohm ORDER BY d.health_last_ts DESC)
        FILTER (WHERE d.health_last_ts IS NOT NULL))[1] AS resistance_end_mohm,
    (array_agg(d.cycles_last ORDER BY d.health_last_ts DESC)
        FILTER (WHERE d.health_last_ts IS NOT NULL))[1] AS cycles_end,
    (array_agg(d.cycles_last ORDER BY d.health_last_ts)
        FILTER (WHERE d.health_last_ts IS NOT NULL))[1] AS cycles_start,
    min(d.health_last_ts) AS cycles_start_ts,
    max(d.health_last_ts) AS cycles_end_ts,
    (array_agg(d.capacity_last_ah ORDER BY d.capacity_last_ts DESC)
        FILTER (WHERE d.capacity_last_ts IS NOT NULL))[1] AS capacity_last_ah,
    (array_agg(d.capacity_last_kwh ORDER BY d.capacity_last_ts DESC)
        FILTER (WHERE d.capacity_last_ts IS NOT NULL))[1] AS capacity_last_kwh,
    max(d.capacity_last_ts) AS capacity_last_ts,
    COALESCE(sum(d.capacity_records), 0) AS fit_days_n,
    COALESCE(sum(d.capacity_sum_ah), 0) AS fit_days_sy,
    COALESCE(sum(d.fit_days_sx), 0) AS fit_days_sx,
    COALESCE(sum(d.fit_days_sxx), 0) AS fit_days_sxx,
    COALESCE(sum(d.fit_days_sxy), 0) AS fit_days_sxy,
    COALESCE(sum(d.fit_cycles_n), 0) AS fit_cycles_n,
    COALESCE(sum(d.fit_cycles_sx), 0) AS fit_cycles_sx,
    COALESCE(sum(d.fit_cycles_sy), 0) AS fit_cycles_sy,
    COALESCE(sum(d.fit_cycles_sxx), 0) AS fit_cycles_sxx,
    COALESCE(sum(d.fit_cycles_sxy), 0) AS fit_cycles_sxy,
    COALESCE(sum(d.swaps_in + d.swaps_out), 0) AS swaps,
    COALESCE(sum(d.health_rejections), 0) AS health_rejections,
    max(d.last_seen_at) AS last_seen_at,
    min(d.day) AS first_day,
    regr_slope(d.cell_imbalance_max_mv, d.day - DATE '2020-01-01')
        FILTER (WHERE d.cell_imbalance_max_mv IS NOT NULL) AS imbalance_mv_per_day,
    count(d.cell_imbalance_max_mv) AS imbalance_days
FROM battery_daily d
WHERE d.battery_serial = b.serial AND d.day BETWEEN :day_from AND :day_to
"""

BATTERY_ROWS = f"""
SELECT b.id, b.serial, b.state, b.oem_id, b.manufactured_on, b.soh_pct,
    b.equivalent_full_cycles AS battery_cycles,
    pt.code AS pack_type_code, pt.chemistry, pt.nominal_capacity_ah, pt.nominal_energy_kwh,
    pt.nominal_voltage_v, oem.code AS oem_code,
    first_health.resistance_first_mohm,
    EXISTS (SELECT 1 FROM battery_recommendations r
            WHERE r.battery_id = b.id AND r.resolved_at IS NULL) AS quarantine_recommended,
    w.*
FROM batteries b
JOIN pack_types pt ON pt.id = b.pack_type_id
LEFT JOIN organizations oem ON oem.id = b.oem_id
CROSS JOIN LATERAL ({WINDOW_FIGURES}) w
LEFT JOIN LATERAL (
    SELECT f.resistance_first_mohm FROM battery_daily f
    WHERE f.battery_serial = b.serial AND f.health_first_ts IS NOT NULL
    ORDER BY f.day LIMIT 1
) first_health ON true
WHERE (CAST(:oem_id AS bigint) IS NULL OR b.oem_id = :oem_id)
  AND (CAST(:pack_type_id AS bigint) IS NULL OR b.pack_type_id = :pack_type_id)
  AND (CAST(:state AS text) IS NULL OR b.state::text = :state)
  AND (CAST(:serial AS text) IS NULL OR b.serial = :serial)
  -- Sargable (no OR), so a keyset page walks uq_batteries_serial and stops at its LIMIT
  -- instead of aggregating every battery's window before sorting: serials are never ''.
  AND b.serial > COALESCE(CAST(:after AS text), '')
  AND (CAST(:max_soh AS float8) IS NULL OR COALESCE(w.soh_end_pct, b.soh_pct) <= :max_soh)
  AND (CAST(:min_soh AS float8) IS NULL OR COALESCE(w.soh_end_pct, b.soh_pct) >= :min_soh)
ORDER BY b.serial
LIMIT :limit
"""


@dataclass(frozen=True)
class BatteryQuery:
    day_from: date
    day_to: date
    oem_id: int | None = None
    pack_type_id: int | None = None
    state: str | None = None
    serial: str | None = None
    max_soh_pct: float | None = None
    min_soh_pct: float | None = None


def battery_rows(
    session: Session, query: BatteryQuery, *, after: str | None, limit: int
) -> Sequence[RowMapping]:
    params: dict[str, Any] = {
        "day_from": query.day_from,
        "day_to": query.day_to,
        "oem_id": query.oem_id,
        "pack_type_id": query.pack_type_id,
        "state": query.state,
        "serial": query.serial,
        "after": after,
        "max_soh": query.max_soh_pct,
        "min_soh": query.min_soh_pct,
        "limit": limit,
    }
    return session.execute(text(BATTERY_ROWS), params).mappings().all()


def organization_by_code(session: Session, code: str) -> RowMapping | None:
    return (
        session.execute(
            text("SELECT id, code, role::text AS role FROM organizations WHERE code = :code"),
            {"code": code},
        )
        .mappings()
        .one_or_none()
    )


def pack_type_id(session: Session, code: str) -> int | None:
    value = session.execute(
        text("SELECT id FROM pack_types WHERE code = :code"), {"code": code}
    ).scalar_one_or_none()
    return int(value) if value is not None else None


def battery_counts(session: Session, oem_id: int | None) -> Sequence[RowMapping]:
    return (
        session.execute(
            text(
                "SELECT b.state::text AS state, pt.code AS pack_type_code, count(*) AS n"
                " FROM batteries b JOIN pack_types pt ON pt.id = b.pack_type_id"
                " WHERE CAST(:oem_id AS bigint) IS NULL OR b.oem_id = :oem_id"
                " GROUP BY 1, 2"
            ),
            {"oem_id": oem_id},
        )
        .mappings()
        .all()
    )


def swap_counts(
    session: Session, oem_id: int | None, day_from: date, day_to: date
) -> Sequence[RowMapping]:
    return (
        session.execute(
            text(
                "SELECT outcome, reason_code, sum(swaps) AS n FROM oem_swap_daily"
                " WHERE day BETWEEN :day_from AND :day_to"
                " AND (CAST(:oem_id AS bigint) IS NULL OR oem_id = :oem_id)"
                " GROUP BY 1, 2"
            ),
            {"oem_id": oem_id, "day_from": day_from, "day_to": day_to},
        )
        .mappings()
        .all()
    )


def quarantined(session: Session, oem_id: int | None) -> Sequence[RowMapping]:
    """Quarantined batteries with their latest quarantine's custody event."""
    return (
        session.execute(
            text(
                "SELECT b.serial, pt.code AS pack_type_code, b.soh_pct, q.at, q.note"
                " FROM batteries b JOIN pack_types pt ON pt.id = b.pack_type_id"
                " LEFT JOIN LATERAL (SELECT c.at, c.note FROM custody_events c"
                "   WHERE c.battery_id = b.id AND c.cause = 'quarantine'"
                "   ORDER BY c.at DESC, c.id DESC LIMIT 1) q ON true"
                " WHERE b.state = 'quarantined'"
                " AND (CAST(:oem_id AS bigint) IS NULL OR b.oem_id = :oem_id)"
                " ORDER BY b.serial"
            ),
            {"oem_id": oem_id},
        )
        .mappings()
        .all()
    )


def quarantine_events(session: Session, battery_id: int) -> Sequence[RowMapping]:
    return (
        session.execute(
            text(
                "SELECT at, note FROM custody_events"
                " WHERE battery_id = :battery_id AND cause = 'quarantine' ORDER BY at, id"
            ),
            {"battery_id": battery_id},
        )
        .mappings()
        .all()
    )


def open_recommendations(session: Session, battery_id: int) -> Sequence[RowMapping]:
    return (
        session.execute(
            text(
                "SELECT kind, reason, value, cohort_median, robust_z, window_from, window_to,"
                " detected_at FROM battery_recommendations"
                " WHERE battery_id = :battery_id AND resolved_at IS NULL ORDER BY kind"
            ),
            {"battery_id": battery_id},
        )
        .mappings()
        .all()
    )


def lifetime_bounds(session: Session, serial: str) -> tuple[date | None, date | None]:
    row = session.execute(
        text("SELECT min(day), max(day) FROM battery_daily WHERE battery_serial = :serial"),
        {"serial": serial},
    ).one()
    return row[0], row[1]


def upsert_recommendation(session: Session, values: dict[str, Any]) -> None:
    session.execute(
        text(
            "INSERT INTO battery_recommendations (battery_id, kind, reason, value,"
            " cohort_median, robust_z, window_from, window_to)"
            " VALUES (:battery_id, :kind, :reason, :value, :cohort_median, :robust_z,"
            " :window_from, :window_to)"
            " ON CONFLICT (battery_id, kind) WHERE resolved_at IS NULL DO UPDATE SET"
            " reason = EXCLUDED.reason, value = EXCLUDED.value,"
            " cohort_median = EXCLUDED.cohort_median, robust_z = EXCLUDED.robust_z,"
            " window_from = EXCLUDED.window_from, window_to = EXCLUDED.window_to,"
            " detected_at = now()"
        ),
        values,
    )
