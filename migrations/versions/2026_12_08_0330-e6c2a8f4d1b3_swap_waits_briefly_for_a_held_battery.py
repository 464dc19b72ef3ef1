"""swap waits briefly for a battery held for a moment instead of refusing

The allocation takes the best compatible battery with FOR UPDATE SKIP LOCKED, so that
concurrent swaps at one station pass over a battery another swap is handing out. But the
ingest locks the batteries of each batch while it updates their readings (a station's charged
batteries send charging samples all the time), and SKIP LOCKED passed over those too: a
station whose only charged batteries were in the batch being written refused the swap with
NoBatteryAvailable, though it could serve it a moment later.

Now, when SKIP LOCKED finds nothing, the same query runs once more waiting for the locks, at
most ALLOCATION_WAIT: a battery an ingest batch holds is taken when the batch commits (its
readings re-checked), one another swap took is passed over once that swap commits, and a
station with no compatible battery is refused at once, as before (nothing to wait for). The
wait is far below PostgreSQL's deadlock_timeout (1 s): in a cycle with an ingest batch that
holds the battery and waits for this swap's removed one, the swap gives up first, refused as
before, and the batch goes on. The second query repeats the first without SKIP LOCKED (a
lock clause cannot be a parameter of static SQL, and dynamic SQL would plan every swap).

The function is edited in place, as b7e2c9d4a1f3 does; the same edit reversed is the
downgrade.

Revision ID: e6c2a8f4d1b3
Revises: d4b8f2a6e9c1
Create Date: 2026-12-08 03:30:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "e6c2a8f4d1b3"
down_revision: str | None = "d4b8f2a6e9c1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = (
    "swapfleet_record_swap(text, text, text, double precision, double precision, text,"
    " double precision, double precision, timestamptz, timestamptz, timestamptz,"
    " double precision, bigint, boolean, bigint, integer)"
)

ALLOCATION_WAIT = "250ms"

CANDIDATES = """\
            FROM batteries b JOIN slots sl ON sl.id = b.slot_id
            WHERE sl.station_id = st.id
              AND sl.enabled
              AND b.state = 'in_service'
              AND b.pack_type_id IN (
                  SELECT mp.pack_type_id FROM vehicle_model_pack_types mp
                  WHERE mp.vehicle_model_id = veh.model_id)
              AND b.soc_pct >= st.target_soc_pct
              AND (b.soh_pct IS NULL OR b.soh_pct >= p_min_soh)
            ORDER BY b.soc_pct DESC, b.equivalent_full_cycles ASC, b.serial ASC
            LIMIT 1
"""

OLD = f"""\
{CANDIDATES}            FOR UPDATE OF b SKIP LOCKED;
            IF NOT FOUND THEN
                reason := 'NoBatteryAvailable';
"""

NEW = f"""\
{CANDIDATES}            FOR UPDATE OF b SKIP LOCKED;
            IF NOT FOUND THEN
                -- Every compatible battery may be locked for a moment: by an ingest batch
                -- updating its readings, or by another swap. Wait for them, briefly, rather
                -- than refuse (migration e6c2a8f4d1b3); nothing matches, nothing to wait for.
                lock_wait := current_setting('lock_timeout');
                PERFORM set_config('lock_timeout', '{ALLOCATION_WAIT}', true);
                BEGIN
                    SELECT b.* INTO installed
{CANDIDATES.replace("            ", "                    ")}                    FOR UPDATE OF b;
                EXCEPTION WHEN lock_not_available THEN
                    installed := NULL;
                END;
                PERFORM set_config('lock_timeout', lock_wait, true);
            END IF;
            IF installed.id IS NULL THEN
                reason := 'NoBatteryAvailable';
"""

OLD_DECLARE = "    moved_at timestamptz;\n"
NEW_DECLARE = "    moved_at timestamptz;\n    lock_wait text;\n"

EDITS = ((OLD_DECLARE, NEW_DECLARE), (OLD, NEW))


def _rewrite(edits: Sequence[tuple[str, str]]) -> None:
    connection = op.get_bind()
    source = connection.execute(
        text("SELECT pg_get_functiondef(CAST(:signature AS regprocedure))"),
        {"signature": SIGNATURE},
    ).scalar_one()
    for old, new in edits:
        # Exactly one match, or the function is not the one this migration knows.
        assert source.count(old) == 1, f"swapfleet_record_swap: {source.count(old)} x {old!r}"
        source = source.replace(old, new)
    # Through the driver's own cursor with no parameters, so that the source's % signs
    # (stations%ROWTYPE, format's %s) are sent as they are.
    connection.connection.cursor().execute(source)


def upgrade() -> None:
    _rewrite(EDITS)


def downgrade() -> None:
    _rewrite([(new, old) for old, new in reversed(EDITS)])
