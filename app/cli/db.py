"""`swapfleet db`: the schema (Alembic migrations); app/cli/__init__.py mounts the report
aggregates' rebuild and the telemetry prune on the same group."""

from typing import Annotated

import typer

from app.cli.common import require_database
from app.core.config import get_settings

db_cli = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Alembic revision")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from app.core.migrate import upgrade

    upgrade(require_database(get_settings()), revision)
    typer.echo(f"database schema at {revision}")


def db_current() -> None:
    """Show the revision the database is at."""
    from alembic import command

    from app.core.migrate import alembic_config

    command.current(alembic_config(require_database(get_settings())))
