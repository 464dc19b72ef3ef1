"""Queries of the reports: battery_daily and the registry, never the raw telemetry tables."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Text, bindparam, cast, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from app.models import (
    Battery,
    CustodyCause,
    CustodyEvent,
    Organization,
    PackType,
)
from app.reports.rows import (
    AnomalySnapshot,
    BatteryCount,
    BatteryWindow,
    CohortInputs,
    PassportEvidence,
    Quarantined,
    QuarantineEvent,
    SohPoint,
    SwapCount,
)
from app.rollups.monthly import per_day
from app.rollups.swaps import OEM_SWAP_ROWS, QUEUED_SWAPS

# The columns a window sums, from whole months of battery_monthly and from the days of
# partial months in battery_daily (`p`, see _PARTS): about 40 rows for a year instead of 365.
# What a day contributes to each is app/rollups/rules.py's (a name it lacks fails here).
_SUMMED = (
    "days", "energy_charged_kwh", "energy_discharged_kwh", "charged_ah", "discharged_ah",
    "charging_sessions", "charging_samples", "temp_spread_sum_c", "seconds_above_45c",
    "seconds_below_0c", "capacity_records", "capacity_sum_ah", "fit_days_sx", "fit_days_sxx",
    "fit_days_sxy", "fit_days_syy", "fit_cycles_n", "fit_cycles_sx", "fit_cycles_sy",
    "fit_cycles_sxx", "fit_cycles_sxy", "fit_cycles_syy", "swaps_in", "swaps_out",
    "health_rejections", "imbalance_n",
    "imbalance_sx", "imbalance_sy", "imbalance_sxx", "imbalance_sxy", "health_records",
)  # fmt: skip


def _window_parts(summed: Sequence[str], extra: bool) -> str:
    """The rows a window sums for battery b: its whole months from battery_monthly, then the
    edge days of partial months from battery_daily. Edge days are two separate ranges (no OR)
    so that each is one range of the primary key. The order of the parts is that in which
    sum() adds them, so two queries built from this add the same values in the same order."""
    monthly = ", ".join(f"m.{c}" for c in summed)
    daily = ", ".join(per_day(c) for c in summed)
    if extra:
        monthly += ", m.temp_max_c, m.last_seen_at, m.first_day"
        daily += ", " + ", ".join(per_day(c) for c in ("temp_max_c", "last_seen_at", "first_day"))
    return f"""
    SELECT {monthly} FROM battery_monthly m
    WHERE m.battery_serial = b.serial AND m.month >= :full_from AND m.month < :full_to
    UNION ALL
    SELECT {daily} FROM battery_daily d
    WHERE d.battery_serial = b.serial AND d.day >= :day_from AND d.day < :full_from
    UNION ALL
    SELECT {daily} FROM battery_daily d
    WHERE d.battery_serial = b.serial AND d.day >= :full_to AND d.day <= :day_to
"""


_PARTS = _window_parts(_SUMMED, extra=True)
_SUMS = ",\n    ".join(
    f"COALESCE(sum(p.{c}), 0) AS {c}" for c in _SUMMED if c not in ("charged_ah", "discharged_ah")
)

# regr_slope of the daily cell imbalance on the day, from the least-squares sums; the guard
# is that of service.least_squares_slope (x must vary).
_N, _SX, _SY = "sum(p.imbalance_n)", "sum(p.imbalance_sx)", "sum(p.imbalance_sy)"
_SXX, _SXY = "sum(p.imbalance_sxx)", "sum(p.imbalance_sxy)"
_IMBALANCE_SLOPE = f"""CASE WHEN {_N} * {_SXX} - {_SX} * {_SX} > 1e-12 * GREATEST(1, {_N} * {_SXX})
    THEN ({_N} * {_SXY} - {_SX} * {_SY}) / ({_N} * {_SXX} - {_SX} * {_SX}) END"""

# One battery's figures over a window of days. "First" and "last" values are one probe each
# of battery_daily's primary key: a day's first/last timestamps lie inside the day, so the
# earliest/latest day that has one also has the earliest/latest timestamp.
WINDOW_FIGURES = f"""
SELECT s.*, hf.*, hl.*, cap.*
FROM (
    SELECT
    {_SUMS},
    COALESCE(sum(p.charged_ah), 0) + COALESCE(sum(p.discharged_ah), 0) AS capacity_throughput_ah,
    COALESCE(sum(p.capacity_records), 0) AS fit_days_n,
    COALESCE(sum(p.capacity_sum_ah), 0) AS fit_days_sy,
    COALESCE(sum(p.swaps_in + p.swaps_out), 0) AS swaps,
    max(p.temp_max_c) AS max_temp_c,
    max(p.last_seen_at) AS last_seen_at,
    min(p.first_day) AS first_day,
    COALESCE(sum(p.imbalance_n), 0) AS imbalance_days,
    {_IMBALANCE_SLOPE} AS imbalance_mv_per_day
    FROM ({_PARTS}) p (
        {", ".join(_SUMMED)}, temp_max_c, last_seen_at, first_day
    )
) s
LEFT JOIN LATERAL (
    SELECT d.soh_first_pct AS soh_start_pct, d.cycles_last AS cycles_start,
        d.health_last_ts AS cycles_start_ts
    FROM battery_daily d
    WHERE d.battery_serial = b.serial AND d.day BETWEEN :day_from AND :day_to
      AND d.health_last_ts IS NOT NULL
    ORDER BY d.day LIMIT 1
) hf ON true
LEFT JOIN LATERAL (
    SELECT d.soh_last_pct AS soh_end_pct, d.resistance_last_mohm AS resistance_end_mohm,
        d.cycles_last AS cycles_end, d.health_last_ts AS cycles_end_ts
    FROM battery_daily d
    WHERE d.battery_serial = b.serial AND d.day BETWEEN :day_from AND :day_to
      AND d.health_last_ts IS NOT NULL
    ORDER BY d.day DESC LIMIT 1
) hl ON true
LEFT JOIN LATERAL (
    SELECT d.capacity_last_ah, d.capacity_last_kwh, d.capacity_last_ts
    FROM battery_daily d
    WHERE d.battery_serial = b.serial AND d.day BETWEEN :day_from AND :day_to
      AND d.capacity_last_ts IS NOT NULL
    ORDER BY d.day DESC LIMIT 1
) cap ON true
"""


def month_split(day_from: date, day_to: date) -> tuple[date, date]:
    """[full_from, full_to): the whole calendar months inside day_from..day_to, read from
    battery_monthly; the days before and after them come from battery_daily. Without a
    whole month both are day_to + 1, so every day is an edge day."""
    full_from = day_from if day_from.day == 1 else _next_month(day_from)
    full_to = (day_to + timedelta(days=1)).replace(day=1)
    if full_from >= full_to:
        full_from = full_to = day_to + timedelta(days=1)
    return full_from, full_to


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


BATTERY_ROWS = f"""
SELECT b.id, b.serial, b.state, b.oem_id, b.manufactured_on, b.soh_pct,
    b.equivalent_full_cycles AS battery_cycles, b.soh_measured_at, b.soh_source,
    b.cycles_measured_at, b.cycles_source, b.registered_energy_throughput_kwh,
    b.registered_capacity_throughput_ah,
    pt.code AS pack_type_code, pt.chemistry, pt.nominal_capacity_ah, pt.nominal_energy_kwh,
    pt.nominal_voltage_v, oem.code AS oem_code,
    first_health.resistance_first_mohm,
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
) -> list[BatteryWindow]:
    full_from, full_to = month_split(query.day_from, query.day_to)
    params: dict[str, Any] = {
        "day_from": query.day_from,
        "day_to": query.day_to,
        "full_from": full_from,
        "full_to": full_to,
        "oem_id": query.oem_id,
        "pack_type_id": query.pack_type_id,
        "state": query.state,
        "serial": query.serial,
        "after": after,
        "max_soh": query.max_soh_pct,
        "min_soh": query.min_soh_pct,
        "limit": limit,
    }
    set_report_plan_settings(session)
    return BatteryWindow.all_of(session.execute(text(BATTERY_ROWS), params).mappings())


def set_report_plan_settings(session: Session) -> None:
    """For this transaction. psycopg prepares a statement run five times, and PostgreSQL then
    tries a generic plan, which cannot drop the unused filters nor see the keyset bound:
    measured 3-4 x slower. JIT compiles any plan whose estimated cost passes jit_above_cost,
    which a batch of 1,000 batteries reaches once the tables are analyzed, for executors that
    spend microseconds per battery: measured 55 ms of compiling on a 94 ms batch of the
    batteries report, and 300-460 ms before the 240-300 ms of ANOMALY_INPUTS."""
    session.execute(
        text(
            "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),"
            " set_config('jit', 'off', true)"
        )
    )


# What the anomaly cohorts and the fleet's energy need of each battery, and nothing else:
# the same parts, sums and health probes as BATTERY_ROWS (so the same values, added in the
# same order), without the report-only columns, probes and filters. Every battery, in serial
# order, in one statement.
_ANOMALY_SUMMED = (
    "energy_charged_kwh", "charging_samples", "temp_spread_sum_c", "seconds_above_45c",
    "capacity_records", "capacity_sum_ah", "fit_days_sx", "fit_days_sxx", "fit_days_sxy",
    "fit_days_syy", "imbalance_n", "imbalance_sx", "imbalance_sy", "imbalance_sxx",
    "imbalance_sxy",
)  # fmt: skip
ANOMALY_INPUTS = f"""
SELECT b.id, b.serial, b.oem_id, b.manufactured_on, b.soh_pct, pt.code AS pack_type_code,
    pt.nominal_capacity_ah, w.*
FROM batteries b
JOIN pack_types pt ON pt.id = b.pack_type_id
CROSS JOIN LATERAL (
    SELECT s.*, hf.*, hl.*
    FROM (
        SELECT
        COALESCE(sum(p.energy_charged_kwh), 0) AS energy_charged_kwh,
        COALESCE(sum(p.charging_samples), 0) AS charging_samples,
        COALESCE(sum(p.temp_spread_sum_c), 0) AS temp_spread_sum_c,
        COALESCE(sum(p.seconds_above_45c), 0) AS seconds_above_45c,
        COALESCE(sum(p.capacity_records), 0) AS fit_days_n,
        COALESCE(sum(p.fit_days_sx), 0) AS fit_days_sx,
        COALESCE(sum(p.capacity_sum_ah), 0) AS fit_days_sy,
        COALESCE(sum(p.fit_days_sxx), 0) AS fit_days_sxx,
        COALESCE(sum(p.fit_days_sxy), 0) AS fit_days_sxy,
        COALESCE(sum(p.fit_days_syy), 0) AS fit_days_syy,
        COALESCE(sum(p.imbalance_n), 0) AS imbalance_days,
        {_IMBALANCE_SLOPE} AS imbalance_mv_per_day
        FROM ({_window_parts(_ANOMALY_SUMMED, extra=False)}) p ({", ".join(_ANOMALY_SUMMED)})
    ) s
    LEFT JOIN LATERAL (
        SELECT d.cycles_last AS cycles_start, d.health_last_ts AS cycles_start_ts
        FROM battery_daily d
        WHERE d.battery_serial = b.serial AND d.day BETWEEN :day_from AND :day_to
          AND d.health_last_ts IS NOT NULL
        ORDER BY d.day LIMIT 1
    ) hf ON true
    LEFT JOIN LATERAL (
        SELECT d.cycles_last AS cycles_end, d.health_last_ts AS cycles_end_ts,
            d.soh_last_pct AS soh_end_pct
        FROM battery_daily d
        WHERE d.battery_serial = b.serial AND d.day BETWEEN :day_from AND :day_to
          AND d.health_last_ts IS NOT NULL
        ORDER BY d.day DESC LIMIT 1
    ) hl ON true
) w
ORDER BY b.serial
"""


def anomaly_inputs(session: Session, day_from: date, day_to: date) -> list[CohortInputs]:
    full_from, full_to = month_split(day_from, day_to)
    params = {"day_from": day_from, "day_to": day_to, "full_from": full_from, "full_to": full_to}
    set_report_plan_settings(session)
    return CohortInputs.all_of(session.execute(text(ANOMALY_INPUTS), params).mappings())


def organization_by_code(session: Session, code: str) -> Organization | None:
    return session.scalar(select(Organization).where(Organization.code == code))


def pack_type_id(session: Session, code: str) -> int | None:
    return session.scalar(select(PackType.id).where(PackType.code == code))


def battery_counts(session: Session, oem_id: int | None) -> list[BatteryCount]:
    state = cast(Battery.state, Text).label("state")
    statement = (
        select(state, PackType.code.label("pack_type_code"), func.count().label("n"))
        .join(PackType, PackType.id == Battery.pack_type_id)
        .group_by(state, PackType.code)
    )
    if oem_id is not None:
        statement = statement.where(Battery.oem_id == oem_id)
    return BatteryCount.all_of(session.execute(statement).mappings())


# The rolled-up counts plus the swaps still queued: each swap is in exactly one of the two in
# any snapshot (the roll-up moves it in one transaction), so the sum is exact.
SWAP_COUNTS = f"""
SELECT outcome, reason_code, sum(swaps) AS n FROM (
    SELECT oem_id, day, outcome, reason_code, swaps FROM oem_swap_daily
    UNION ALL
    {OEM_SWAP_ROWS.format(swaps=QUEUED_SWAPS)}
) c
WHERE day BETWEEN :day_from AND :day_to
  AND (CAST(:oem_id AS bigint) IS NULL OR oem_id = :oem_id)
GROUP BY 1, 2
"""


def swap_counts(
    session: Session, oem_id: int | None, day_from: date, day_to: date
) -> list[SwapCount]:
    params = {"oem_id": oem_id, "day_from": day_from, "day_to": day_to}
    return SwapCount.all_of(session.execute(text(SWAP_COUNTS), params).mappings())


def quarantined(session: Session, oem_id: int | None) -> list[Quarantined]:
    """Quarantined batteries with their latest quarantine's custody event."""
    return Quarantined.all_of(
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
        ).mappings()
    )


# What a passport's figures rest on beyond the window's sums, over the battery's whole life:
# its registration (the custody core's `registered` event) and its vehicle readings (kept per
# day only, not in battery_monthly).
PASSPORT_EVIDENCE = """
SELECT (SELECT min(e.at) FROM custody_events e
        WHERE e.battery_id = b.id AND e.cause = 'registered') AS registered_at,
    (SELECT COALESCE(sum(d.vehicle_samples), 0) FROM battery_daily d
     WHERE d.battery_serial = b.serial) AS vehicle_samples
FROM batteries b WHERE b.id = :battery_id
"""


def passport_evidence(session: Session, battery_id: int) -> PassportEvidence:
    return PassportEvidence.of(
        session.execute(text(PASSPORT_EVIDENCE), {"battery_id": battery_id}).mappings().one()
    )


def quarantine_events(session: Session, battery_id: int) -> list[QuarantineEvent]:
    statement = (
        select(CustodyEvent.at, CustodyEvent.note)
        .where(CustodyEvent.battery_id == battery_id, CustodyEvent.cause == CustodyCause.quarantine)
        .order_by(CustodyEvent.at, CustodyEvent.id)
    )
    return QuarantineEvent.all_of(session.execute(statement).mappings())


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


# The latest health record of each battery in scope within the window: one probe each.
SOH_POINTS = """
SELECT b.serial, b.manufactured_on, b.equivalent_full_cycles AS battery_cycles,
    hl.soh_last_pct AS soh_end_pct, hl.cycles_last AS cycles_end
FROM batteries b
CROSS JOIN LATERAL (
    SELECT d.soh_last_pct, d.cycles_last FROM battery_daily d
    WHERE d.battery_serial = b.serial AND d.day BETWEEN :day_from AND :day_to
      AND d.health_last_ts IS NOT NULL
    ORDER BY d.day DESC LIMIT 1
) hl
WHERE (CAST(:oem_id AS bigint) IS NULL OR b.oem_id = :oem_id) AND hl.soh_last_pct IS NOT NULL
"""

# What the anomalies and energy of a window depend on: the sums of every month the window
# touches (each ingest, swap or rebuild changes at least one of them) and the cohorts'
# membership. Summed as numeric, which is exact, so that the order in which a (parallel)
# plan adds the rows cannot change the fingerprint; a float sum could, in its last digits.
ANOMALY_FINGERPRINT = """
SELECT concat_ws(':', m.n, m.days, m.samples, m.health, m.cap_n, m.imb_n, m.swaps, m.vals,
    m.seen, r.n, r.oems, r.packs, r.soh, r.made)
FROM (
    SELECT count(*) AS n, sum(days) AS days, sum(charging_samples) AS samples,
        sum(health_records) AS health, sum(capacity_records) AS cap_n,
        sum(imbalance_n) AS imb_n, sum(swaps_in + swaps_out) AS swaps,
        -- New data moves the counts above; this catches recomputed values (a rebuild).
        sum((energy_charged_kwh + capacity_sum_ah + fit_cycles_sx + seconds_above_45c
             + temp_spread_sum_c + imbalance_sy)::numeric) AS vals,
        max(last_seen_at) AS seen
    FROM battery_monthly
    WHERE month BETWEEN date_trunc('month', CAST(:day_from AS date))
        AND date_trunc('month', CAST(:day_to AS date))
) m, (
    -- The lifetime fading check and the SoH floor read the registry's SoH and age too.
    SELECT count(*) AS n, sum(COALESCE(oem_id, 0)) AS oems, sum(pack_type_id) AS packs,
        sum(COALESCE(soh_pct, 0)::numeric) AS soh,
        sum(COALESCE(manufactured_on - DATE '2000-01-01', 0)) AS made
    FROM batteries
) r
"""


def soh_points(
    session: Session, oem_id: int | None, day_from: date, day_to: date
) -> list[SohPoint]:
    params = {"day_from": day_from, "day_to": day_to, "oem_id": oem_id}
    set_report_plan_settings(session)
    return SohPoint.all_of(session.execute(text(SOH_POINTS), params).mappings())


def anomaly_fingerprint(session: Session, day_from: date, day_to: date) -> str:
    params = {"day_from": day_from, "day_to": day_to}
    return str(session.execute(text(ANOMALY_FINGERPRINT), params).scalar_one())


def _snapshot(
    session: Session, day_from: date, day_to: date, condition: str, params: dict[str, Any]
) -> AnomalySnapshot | None:
    row = (
        session.execute(
            text(
                "SELECT anomalies, energy_by_oem, computed_at FROM report_anomaly_snapshots"
                f" WHERE window_from = :day_from AND window_to = :day_to AND {condition}"
            ),
            {"day_from": day_from, "day_to": day_to, **params},
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else AnomalySnapshot.of(row)


def anomaly_snapshot(
    session: Session, day_from: date, day_to: date, fingerprint: str
) -> AnomalySnapshot | None:
    return _snapshot(
        session, day_from, day_to, "fingerprint = :fingerprint", {"fingerprint": fingerprint}
    )


def recent_anomaly_snapshot(
    session: Session, day_from: date, day_to: date, max_age_s: float
) -> AnomalySnapshot | None:
    return _snapshot(
        session,
        day_from,
        day_to,
        "computed_at > now() - make_interval(secs => :max_age_s)",
        {"max_age_s": max_age_s},
    )


def save_anomaly_snapshot(
    session: Session,
    day_from: date,
    day_to: date,
    fingerprint: str,
    anomalies: list[dict[str, Any]],
    energy_by_oem: dict[str, float],
) -> None:
    # Windows follow the calendar (the default one ends today): old ones are not asked again.
    session.execute(
        text("DELETE FROM report_anomaly_snapshots WHERE computed_at < now() - INTERVAL '2 days'")
    )
    session.execute(
        text(
            "INSERT INTO report_anomaly_snapshots"
            " (window_from, window_to, fingerprint, anomalies, energy_by_oem)"
            " VALUES (:day_from, :day_to, :fingerprint, :anomalies, :energy_by_oem)"
            " ON CONFLICT (window_from, window_to) DO UPDATE SET"
            " fingerprint = EXCLUDED.fingerprint, anomalies = EXCLUDED.anomalies,"
            " energy_by_oem = EXCLUDED.energy_by_oem, computed_at = now()"
        ).bindparams(bindparam("anomalies", type_=JSONB), bindparam("energy_by_oem", type_=JSONB)),
        {
            "day_from": day_from,
            "day_to": day_to,
            "fingerprint": fingerprint,
            "anomalies": anomalies,
            "energy_by_oem": energy_by_oem,
        },
    )
