"""swap locks its vehicle FOR NO KEY UPDATE, so that a row referencing the vehicle never waits

swapfleet_record_swap locked the vehicle FOR UPDATE, then the battery it removes. A battery
move or lifecycle change (app/batteries/custody.py) locks the battery, then writes a
custody_events row whose foreign key to the battery's vehicle takes a key-share lock on the
vehicle, which FOR UPDATE conflicts with: the two formed a cycle and PostgreSQL aborted the
swap as a deadlock (tests/swaps/test_swap_concurrency.py reproduces it). The swap changes
nothing in the vehicle row; it locks it only so that two swaps of one vehicle take turns, and
FOR NO KEY UPDATE still does that while letting rows that reference the vehicle be written.
The batteries stay FOR UPDATE: the swap changes their slot_id and vehicle_id, which unique
indexes make key columns, so its UPDATEs take that lock anyway.

Edited in place, as b7e2c9d4a1f3 does.

Revision ID: c1d5e8f2a7b4
Revises: c3a9e5f1b7d2
Create Date: 2026-12-08 02:30:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "c1d5e8f2a7b4"
down_revision: str | None = "c3a9e5f1b7d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = (
    "swapfleet_record_swap(text, text, text, double precision, double precision, text,"
    " double precision, double precision, timestamptz, timestamptz, timestamptz,"
    " double precision, bigint, boolean, bigint, integer)"
)

OLD_LOCK = """\
        -- Lock order: vehicle, then the batteries: removed then allocated (which skips
        -- locked rows), or both in serial order when the installed one is named.
        SELECT v.* INTO veh FROM vehicles v WHERE v.vin = p_vin FOR UPDATE;
"""
NEW_LOCK = """\
        -- Lock order: vehicle, then the batteries: removed then allocated (which skips
        -- locked rows), or both in serial order when the installed one is named. The
        -- vehicle FOR NO KEY UPDATE: two swaps of it take turns, and a custody change
        -- referencing it (key share) never waits for a swap (migration c1d5e8f2a7b4).
        SELECT v.* INTO veh FROM vehicles v WHERE v.vin = p_vin FOR NO KEY UPDATE;
"""


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
    _replace_in_function(OLD_LOCK, NEW_LOCK)


def downgrade() -> None:
    _replace_in_function(NEW_LOCK, OLD_LOCK)
