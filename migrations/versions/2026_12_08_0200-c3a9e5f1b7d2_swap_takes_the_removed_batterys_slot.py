"""swap takes the slot the station put the removed battery in

swapfleet_record_swap put the removed battery into the slot the installed one left. An OCPP
2.1 station reports the slot itself (BatterySwap BatteryIn's evseId), usually an empty one
other than the slot the charged battery leaves, so every OCPP swap was recorded in two moves:
the function's, into the freed slot, and the gateway's correction into the BatteryIn slot, a
second UPDATE and custody event, and a history showing the battery in a slot it never was in.

The function now takes p_removed_to_slot (a slot number of the station, NULL for the freed
slot, which is what POST /v1/swaps passes). A named slot is taken when it is an enabled, empty
slot of the station; otherwise the freed slot, and the gateway moves the battery as the
station reported it, flagged, as before (app/ocpp/service.py _follow_station). The slot row is
locked before it is checked for emptiness, so two swaps naming one empty slot take it one
after the other; each statement of the function sees what committed before it.

The new parameter changes the function's signature: the stored source is read back, edited
as b7e2c9d4a1f3 edits it, created under the new signature and the old one dropped; the same
edits reversed are the downgrade.

Revision ID: c3a9e5f1b7d2
Revises: b8e4d2a6c1f3
Create Date: 2026-12-08 02:00:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "c3a9e5f1b7d2"
down_revision: str | None = "b8e4d2a6c1f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SIGNATURE = (
    "swapfleet_record_swap(text, text, text, double precision, double precision, text,"
    " double precision, double precision, timestamptz, timestamptz, timestamptz,"
    " double precision, bigint, boolean, bigint)"
)
NEW_SIGNATURE = OLD_SIGNATURE[:-1] + ", integer)"

EDITS = (
    (
        "p_operator_id bigint, OUT status text",
        "p_operator_id bigint, p_removed_to_slot integer, OUT status text",
    ),
    (
        "    from_slot slots%ROWTYPE;\n",
        "    from_slot slots%ROWTYPE;\n    to_slot slots%ROWTYPE;\n",
    ),
    (
        "        -- The charged battery leaves its slot first,",
        """\
        -- The removed battery goes where the station put it (OCPP's BatteryIn slot) when that
        -- is an enabled, empty slot of this station, else into the slot the charged one
        -- leaves (migration c3a9e5f1b7d2). The slot is locked first, then checked: the check
        -- is a statement of its own and so sees a battery another swap put there meanwhile.
        to_slot := from_slot;
        IF p_removed_to_slot IS NOT NULL AND p_removed_to_slot <> from_slot.number THEN
            SELECT sl.* INTO to_slot FROM slots sl
            WHERE sl.station_id = st.id AND sl.number = p_removed_to_slot AND sl.enabled
            FOR UPDATE;
            IF NOT FOUND OR EXISTS (SELECT FROM batteries b WHERE b.slot_id = to_slot.id) THEN
                to_slot := from_slot;
            END IF;
        END IF;

        -- The charged battery leaves its slot first,""",
    ),
    (
        "        SET location_kind = 'slot', slot_id = from_slot.id, vehicle_id = NULL,",
        "        SET location_kind = 'slot', slot_id = to_slot.id, vehicle_id = NULL,",
    ),
    (
        "removed.id, p_removed_serial, p_removed_soc, p_removed_soh, from_slot.id,",
        "removed.id, p_removed_serial, p_removed_soc, p_removed_soh, to_slot.id,",
    ),
    (
        "             'slot', from_slot.id, NULL, removed.state, removed.state,",
        "             'slot', to_slot.id, NULL, removed.state, removed.state,",
    ),
    (
        "        removed_to_slot_number := from_slot.number;",
        "        removed_to_slot_number := to_slot.number;",
    ),
    (
        "        -- The history shows each battery's real move: vehicle -> freed slot,",
        "        -- The history shows each battery's real move: vehicle -> its slot,",
    ),
)


def _rewrite(signature: str, edits: Sequence[tuple[str, str]], drop: str) -> None:
    connection = op.get_bind()
    source = connection.execute(
        text("SELECT pg_get_functiondef(CAST(:signature AS regprocedure))"),
        {"signature": signature},
    ).scalar_one()
    for old, new in edits:
        # Exactly one match, or the function is not the one this migration knows.
        assert source.count(old) == 1, f"swapfleet_record_swap: {source.count(old)} x {old!r}"
        source = source.replace(old, new)
    # Through the driver's own cursor with no parameters, so that the source's % signs
    # (stations%ROWTYPE, format's %s) are sent as they are.
    cursor = connection.connection.cursor()
    cursor.execute(source)
    cursor.execute(f"DROP FUNCTION {drop}")


def upgrade() -> None:
    _rewrite(OLD_SIGNATURE, EDITS, OLD_SIGNATURE)


def downgrade() -> None:
    _rewrite(NEW_SIGNATURE, [(new, old) for old, new in reversed(EDITS)], NEW_SIGNATURE)
