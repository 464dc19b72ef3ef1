"""swap locks a named installed battery and the removed one in serial order

swapfleet_record_swap (migration a6d2f8c4e1b9) locked the removed battery, then the named
installed one. The ingest locks the batteries of a batch in serial order, one row at a time
(app/ingest/writer.py lock_batteries). When the installed battery's serial sorted first, a
batch holding it and waiting for the removed one formed a cycle with the swap, and PostgreSQL
aborted one of them as a deadlock (tests/swaps/test_swap_concurrency.py reproduces it). Now a
swap that names its installed battery locks both in serial order, right after the vehicle.
A swap whose battery the backend allocates is left as it was: its allocation skips locked
rows (SKIP LOCKED), so it never waits for the ingest there.

The function is changed in place: its stored source is read back, one anchor line gets the new
lock before it, and the result replaced; the same edit reversed is the downgrade. This keeps
one copy of the function's 200 lines (in a6d2f8c4e1b9) instead of two more here.

Revision ID: b7e2c9d4a1f3
Revises: 0e8798c22d89
Create Date: 2026-12-07 18:00:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "b7e2c9d4a1f3"
down_revision: str | None = "0e8798c22d89"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = (
    "swapfleet_record_swap(text, text, text, double precision, double precision, text,"
    " double precision, double precision, timestamptz, timestamptz, timestamptz,"
    " double precision, bigint, boolean, bigint)"
)

ANCHOR = (
    "        SELECT b.* INTO removed FROM batteries b WHERE b.serial = p_removed_serial"
    " FOR UPDATE;\n"
)

SERIAL_ORDER_LOCK = """\
        -- A named installed battery: both batteries now, in serial order, the order the
        -- ingest locks a batch's batteries in (migration b7e2c9d4a1f3).
        IF p_installed_serial IS NOT NULL THEN
            PERFORM 1 FROM batteries b
            WHERE b.serial IN (p_removed_serial, p_installed_serial)
            ORDER BY b.serial
            FOR UPDATE;
        END IF;

"""


def _replace_in_function(old: str, new: str) -> None:
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


# The function's comment on its lock order, which this migration makes untrue.
OLD_COMMENT = """\
        -- Lock order: vehicle, then removed battery, then installed battery. Every swap
        -- takes them in this order, so two swaps cannot deadlock on each other.
"""
NEW_COMMENT = """\
        -- Lock order: vehicle, then the batteries: removed then allocated (which skips
        -- locked rows), or both in serial order when the installed one is named.
"""


def upgrade() -> None:
    _replace_in_function(ANCHOR, SERIAL_ORDER_LOCK + ANCHOR)
    _replace_in_function(OLD_COMMENT, NEW_COMMENT)


def downgrade() -> None:
    _replace_in_function(NEW_COMMENT, OLD_COMMENT)
    _replace_in_function(SERIAL_ORDER_LOCK + ANCHOR, ANCHOR)
