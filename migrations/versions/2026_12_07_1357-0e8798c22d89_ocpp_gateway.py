"""ocpp gateway: station passwords, connection leases, idToken -> vehicle, OCPP swaps in
progress, swap requests and other commands sent to stations, custody exceptions,
and the slot's connector status

What the OCPP 2.1 gateway (app/ocpp, docs/ocpp.md) keeps. The stations' passwords are stored
hashed (PBKDF2-SHA512, as Mosquitto's); a lease in ocpp_connections is what lets one station
hold one WebSocket across several gateway instances.

Revision ID: 0e8798c22d89
Revises: a6d2f8c4e1b9
Create Date: 2026-12-07 13:57:26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0e8798c22d89"
down_revision: str | None = "a6d2f8c4e1b9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ocpp_connections",
        sa.Column("station_id", sa.BigInteger(), nullable=False),
        sa.Column("instance_id", sa.String(length=100), nullable=False),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["stations.id"],
            name=op.f("fk_ocpp_connections_station_id_stations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("station_id", name=op.f("pk_ocpp_connections")),
    )
    op.create_table(
        "ocpp_credentials",
        sa.Column("station_id", sa.BigInteger(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["stations.id"],
            name=op.f("fk_ocpp_credentials_station_id_stations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("station_id", name=op.f("pk_ocpp_credentials")),
    )
    op.create_table(
        "id_tokens",
        sa.Column("id_token", sa.String(length=255), nullable=False),
        sa.Column("vehicle_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("id_token = lower(id_token)", name=op.f("ck_id_tokens_lower_case")),
        sa.ForeignKeyConstraint(
            ["vehicle_id"],
            ["vehicles.id"],
            name=op.f("fk_id_tokens_vehicle_id_vehicles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_token", name=op.f("pk_id_tokens")),
    )
    op.create_index(op.f("ix_id_tokens_vehicle_id"), "id_tokens", ["vehicle_id"], unique=False)
    op.create_table(
        "custody_exceptions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("station_id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason_code", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("swap_id", sa.UUID(), nullable=True),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("battery_serial", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["stations.id"],
            name=op.f("fk_custody_exceptions_station_id_stations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["swap_id"],
            ["swap_events.id"],
            name=op.f("fk_custody_exceptions_swap_id_swap_events"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_exceptions")),
    )
    op.create_index(
        "ix_custody_exceptions_station_id_at",
        "custody_exceptions",
        ["station_id", "at"],
        unique=False,
    )
    op.create_table(
        "ocpp_swaps",
        sa.Column("station_id", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("id_token", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("in_serial", sa.String(length=64), nullable=False),
        sa.Column("in_evse_id", sa.Integer(), nullable=False),
        sa.Column("in_soc_pct", sa.Double(), nullable=False),
        sa.Column("in_soh_pct", sa.Double(), nullable=False),
        sa.Column("in_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("swap_id", sa.UUID(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "state IN ('open', 'completed', 'aborted')", name=op.f("ck_ocpp_swaps_state_known")
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["stations.id"],
            name=op.f("fk_ocpp_swaps_station_id_stations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["swap_id"],
            ["swap_events.id"],
            name=op.f("fk_ocpp_swaps_swap_id_swap_events"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("station_id", "request_id", name=op.f("pk_ocpp_swaps")),
    )
    op.create_table(
        "ocpp_swap_requests",
        sa.Column("request_id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("station_id", sa.BigInteger(), nullable=False),
        sa.Column("id_token", sa.String(length=255), nullable=False),
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("status_info", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'sent', 'accepted', 'rejected', 'failed')",
            name=op.f("ck_ocpp_swap_requests_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["stations.id"],
            name=op.f("fk_ocpp_swap_requests_station_id_stations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_ocpp_swap_requests")),
    )
    op.create_index(
        "ix_ocpp_swap_requests_station_id_state",
        "ocpp_swap_requests",
        ["station_id", "state"],
        unique=False,
    )
    op.create_table(
        "ocpp_commands",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("station_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("status_info", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'sent', 'accepted', 'scheduled', 'rejected', 'failed')",
            name=op.f("ck_ocpp_commands_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["stations.id"],
            name=op.f("fk_ocpp_commands_station_id_stations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ocpp_commands")),
    )
    op.create_index(
        "ix_ocpp_commands_station_id_state", "ocpp_commands", ["station_id", "state"], unique=False
    )
    op.add_column("slots", sa.Column("connector_status", sa.String(length=16), nullable=True))
    op.add_column(
        "slots", sa.Column("connector_status_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("slots", "connector_status_at")
    op.drop_column("slots", "connector_status")
    op.drop_index("ix_ocpp_commands_station_id_state", table_name="ocpp_commands")
    op.drop_table("ocpp_commands")
    op.drop_index("ix_ocpp_swap_requests_station_id_state", table_name="ocpp_swap_requests")
    op.drop_table("ocpp_swap_requests")
    op.drop_table("ocpp_swaps")
    op.drop_index("ix_custody_exceptions_station_id_at", table_name="custody_exceptions")
    op.drop_table("custody_exceptions")
    op.drop_index(op.f("ix_id_tokens_vehicle_id"), table_name="id_tokens")
    op.drop_table("id_tokens")
    op.drop_table("ocpp_credentials")
    op.drop_table("ocpp_connections")
