"""The `swapfleet` command.

What a person reads (keys, summaries, where the database is) goes to stdout with typer.echo;
diagnostics go to the log on stderr.
"""

import logging

import typer

from app.cli import api, db, demo, keys, up
from app.core import clock
from app.core.config import get_settings
from app.ingest import cli as ingest_cli
from app.provisioning.cli import devices_cli
from app.reports import cli as reports_cli
from simulators.cli import CLOCK_META_KEY, simulate_cli

logger = logging.getLogger("app.cli")

cli = typer.Typer(
    help="swapfleet: battery custody, swaps and telemetry for battery-swap station fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cli.add_typer(db.db_cli, name="db")
cli.add_typer(keys.keys_cli, name="keys")
cli.add_typer(devices_cli, name="devices")
cli.add_typer(simulate_cli, name="simulate")
cli.command("report")(reports_cli.report)
db.db_cli.command("rebuild-aggregates")(reports_cli.rebuild_aggregates)
cli.command("detect-anomalies")(reports_cli.detect_anomalies)
cli.command("ingest", help="Subscribe to device telemetry over MQTT and store every record.")(
    ingest_cli.run
)
db.db_cli.command("prune")(ingest_cli.prune)
db.db_cli.command("upgrade")(db.db_upgrade)
db.db_cli.command("current")(db.db_current)
cli.command("api")(api.api)
cli.command("seed-demo")(demo.seed_demo_command)
cli.command("up")(up.up)


@cli.callback()
def _configure(ctx: typer.Context) -> None:
    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    # `swapfleet simulate` runs on the backend's clock (simulators/cli.py CLOCK_META_KEY).
    ctx.meta[CLOCK_META_KEY] = clock.now


def main() -> None:
    cli()
