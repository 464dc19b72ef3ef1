"""battery readings per field: each derived reading with its own measured-at time and source,
and a lifetime history given at registration

batteries had one readings_at for SoC, SoH and cycles together, and the ingest updated a field
only when its record was newer than readings_at: SoC readings (every few minutes) and swaps
moved it past the health records (once a charge), so most cycle and SoH updates were skipped
(issue 14). Each field now has its own measured-at time, and a reading replaces a field only
when it is at least as new as that field's time, whatever the other fields did. Columns on
batteries rather than a separate table: allocation orders by cycles inside the swap function,
the API reads one row per battery, and three fields do not need a key-value table.

- soc_measured_at, soh_measured_at, cycles_measured_at: when the reading was taken (the
  record's ts, or the swap's end); NULL for a value given at registration, so any device
  reading replaces it.
- soh_source ('registration', 'health_record', 'swap'), cycles_source ('registration',
  'health_record'): where the value came from; NULL when nothing was given.
- registered_energy_throughput_kwh, registered_capacity_throughput_ah: what the battery had
  done before it was registered, when the registrant knew it, so that lifetime figures are
  lifetime.

readings_at stays, as the newest of the per-field times.

Existing rows are backfilled: SoH and cycles from each battery's newest health record, SoC's
time from readings_at. swapfleet_record_swap is edited in place, as b7e2c9d4a1f3 does (its
stored source read back, three passages replaced, the same edits reversed for the downgrade):
a swap's readings are compared with the per-field times, and only readings the request gave
are stamped as measured at the swap.

Revision ID: b8e4d2a6c1f3
Revises: b8f4d2a6c9e1
Create Date: 2026-12-07 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import text

revision: str = "b8e4d2a6c1f3"
down_revision: str | None = "b8f4d2a6c9e1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = """
UPDATE batteries b
SET soh_pct = h.soh_pct, soh_measured_at = h.ts, soh_source = 'health_record',
    equivalent_full_cycles = h.cycle_count, cycles_measured_at = h.ts,
    cycles_source = 'health_record', readings_at = greatest(b.readings_at, h.ts)
FROM (
    SELECT DISTINCT ON (battery_serial) battery_serial, ts, soh_pct, cycle_count
    FROM health_records ORDER BY battery_serial, ts DESC
) h
WHERE h.battery_serial = b.serial
"""

SIGNATURE = (
    "swapfleet_record_swap(text, text, text, double precision, double precision, text,"
    " double precision, double precision, timestamptz, timestamptz, timestamptz,"
    " double precision, bigint, boolean, bigint)"
)

# The readings a completed swap takes: one readings_at judged them all, and the installed
# battery's stored values were restamped as measured at the swap.
OLD_READINGS = """\
        -- A reading counts unless the battery holds a newer one; the installed battery's own
        -- values stand in for readings the request did not give.
        IF removed.readings_at IS NULL OR removed.readings_at <= moved_at THEN
            removed.soc_pct := coalesce(p_removed_soc, removed.soc_pct);
            removed.soh_pct := coalesce(p_removed_soh, removed.soh_pct);
            IF p_removed_soc IS NOT NULL OR p_removed_soh IS NOT NULL THEN
                removed.readings_at := moved_at;
            END IF;
        END IF;
        soc := coalesce(p_installed_soc, installed.soc_pct);
        soh := coalesce(p_installed_soh, installed.soh_pct);
        IF installed.readings_at IS NULL OR installed.readings_at <= moved_at THEN
            installed.soc_pct := soc;
            installed.soh_pct := soh;
            IF soc IS NOT NULL OR soh IS NOT NULL THEN
                installed.readings_at := moved_at;
            END IF;
        END IF;

"""
NEW_READINGS = """\
        -- Each reading the station gave counts unless the battery holds a newer reading of
        -- that field (per-field times, migration b8e4d2a6c1f3); a value the request did not
        -- give is not a reading, so it never restamps the stored one.
        IF p_removed_soc IS NOT NULL
           AND (removed.soc_measured_at IS NULL OR removed.soc_measured_at <= moved_at) THEN
            removed.soc_pct := p_removed_soc;
            removed.soc_measured_at := moved_at;
            removed.readings_at := greatest(removed.readings_at, moved_at);
        END IF;
        IF p_removed_soh IS NOT NULL
           AND (removed.soh_measured_at IS NULL OR removed.soh_measured_at <= moved_at) THEN
            removed.soh_pct := p_removed_soh;
            removed.soh_measured_at := moved_at;
            removed.soh_source := 'swap';
            removed.readings_at := greatest(removed.readings_at, moved_at);
        END IF;
        -- The installed battery's own values stand in for readings the request did not give
        -- (in the swap's record, not as new readings).
        soc := coalesce(p_installed_soc, installed.soc_pct);
        soh := coalesce(p_installed_soh, installed.soh_pct);
        IF p_installed_soc IS NOT NULL
           AND (installed.soc_measured_at IS NULL OR installed.soc_measured_at <= moved_at) THEN
            installed.soc_pct := p_installed_soc;
            installed.soc_measured_at := moved_at;
            installed.readings_at := greatest(installed.readings_at, moved_at);
        END IF;
        IF p_installed_soh IS NOT NULL
           AND (installed.soh_measured_at IS NULL OR installed.soh_measured_at <= moved_at) THEN
            installed.soh_pct := p_installed_soh;
            installed.soh_measured_at := moved_at;
            installed.soh_source := 'swap';
            installed.readings_at := greatest(installed.readings_at, moved_at);
        END IF;

"""
# The two UPDATEs that store them, now with the per-field times and source.
OLD_STORE_INSTALLED = """\
        SET location_kind = 'in_transit', slot_id = NULL, soc_pct = installed.soc_pct,
            soh_pct = installed.soh_pct, readings_at = installed.readings_at, updated_at = p_now
"""
NEW_STORE_INSTALLED = """\
        SET location_kind = 'in_transit', slot_id = NULL, soc_pct = installed.soc_pct,
            soc_measured_at = installed.soc_measured_at, soh_pct = installed.soh_pct,
            soh_measured_at = installed.soh_measured_at, soh_source = installed.soh_source,
            readings_at = installed.readings_at, updated_at = p_now
"""
OLD_STORE_REMOVED = """\
            location_note = NULL, soc_pct = removed.soc_pct, soh_pct = removed.soh_pct,
            readings_at = removed.readings_at, updated_at = p_now
"""
NEW_STORE_REMOVED = """\
            location_note = NULL, soc_pct = removed.soc_pct,
            soc_measured_at = removed.soc_measured_at, soh_pct = removed.soh_pct,
            soh_measured_at = removed.soh_measured_at, soh_source = removed.soh_source,
            readings_at = removed.readings_at, updated_at = p_now
"""
SWAP_EDITS = (
    (OLD_READINGS, NEW_READINGS),
    (OLD_STORE_INSTALLED, NEW_STORE_INSTALLED),
    (OLD_STORE_REMOVED, NEW_STORE_REMOVED),
)


def _replace_in_function(old: str, new: str) -> None:
    """b7e2c9d4a1f3's in-place edit of swapfleet_record_swap (a revision keeps its own copy)."""
    connection = op.get_bind()
    source = connection.execute(
        text("SELECT pg_get_functiondef(CAST(:signature AS regprocedure))"),
        {"signature": SIGNATURE},
    ).scalar_one()
    # Exactly one match, or the function is not the one this migration knows.
    assert source.count(old) == 1, f"swapfleet_record_swap has {source.count(old)} anchors"
    # Through the driver's own cursor with no parameters, so that the source's % signs
    # (stations%ROWTYPE, format's %s) are sent as they are.
    connection.connection.cursor().execute(source.replace(old, new))


def upgrade() -> None:
    op.add_column("batteries", sa.Column("soc_measured_at", sa.DateTime(timezone=True)))
    op.add_column("batteries", sa.Column("soh_measured_at", sa.DateTime(timezone=True)))
    op.add_column("batteries", sa.Column("soh_source", sa.String(length=16)))
    op.add_column("batteries", sa.Column("cycles_measured_at", sa.DateTime(timezone=True)))
    op.add_column("batteries", sa.Column("cycles_source", sa.String(length=16)))
    op.add_column("batteries", sa.Column("registered_energy_throughput_kwh", sa.Double()))
    op.add_column("batteries", sa.Column("registered_capacity_throughput_ah", sa.Double()))
    op.create_check_constraint(
        op.f("ck_batteries_soh_source_known"),
        "batteries",
        "soh_source IN ('registration', 'health_record', 'swap')",
    )
    op.create_check_constraint(
        op.f("ck_batteries_cycles_source_known"),
        "batteries",
        "cycles_source IN ('registration', 'health_record')",
    )
    op.create_check_constraint(
        op.f("ck_batteries_registered_throughput_nonnegative"),
        "batteries",
        "(registered_energy_throughput_kwh IS NULL OR registered_energy_throughput_kwh >= 0)"
        " AND (registered_capacity_throughput_ah IS NULL"
        " OR registered_capacity_throughput_ah >= 0)",
    )
    op.execute(
        "UPDATE batteries SET soc_measured_at = readings_at WHERE soc_pct IS NOT NULL;"
        " UPDATE batteries SET soh_source = 'registration' WHERE soh_pct IS NOT NULL;"
        " UPDATE batteries SET cycles_source = 'registration'"
    )
    op.execute(BACKFILL)
    for old, new in SWAP_EDITS:
        _replace_in_function(old, new)


def downgrade() -> None:
    for old, new in reversed(SWAP_EDITS):
        _replace_in_function(new, old)
    for name in ("registered_throughput_nonnegative", "cycles_source_known", "soh_source_known"):
        op.drop_constraint(op.f(f"ck_batteries_{name}"), "batteries", type_="check")
    for column in (
        "registered_capacity_throughput_ah",
        "registered_energy_throughput_kwh",
        "cycles_source",
        "cycles_measured_at",
        "soh_source",
        "soh_measured_at",
        "soc_measured_at",
    ):
        op.drop_column("batteries", column)
