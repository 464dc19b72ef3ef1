"""slot faults from OCPP NotifyEvent

A station reports a problem with a slot's equipment (a charger, a lock, a connector) through
NotifyEvent, as the standard `Problem` variable of a component on that EVSE, with the
component's technical code and information, and reports it cleared the same way.

- fault_code: the technical code (techCode), else the component's name; null when the slot
  has no open problem;
- fault_info: techInfo, when given;
- fault_at: when the latest problem report (raised or cleared) was generated at the station;
  an older report changes nothing.

Revision ID: d4b8f2a6e9c1
Revises: c1d5e8f2a7b4
Create Date: 2026-12-08 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d4b8f2a6e9c1"
down_revision: str | None = "c1d5e8f2a7b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("slots", sa.Column("fault_code", sa.String(length=50)))
    op.add_column("slots", sa.Column("fault_info", sa.String(length=500)))
    op.add_column("slots", sa.Column("fault_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("slots", "fault_at")
    op.drop_column("slots", "fault_info")
    op.drop_column("slots", "fault_code")
