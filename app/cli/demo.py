"""`swapfleet seed-demo`: the demo network."""

import typer

from app.cli.common import require_database
from app.core.config import get_settings
from app.core.db import get_session_factory
from app.local.demo import SeedSummary, seed_demo


def echo_seed_summary(summary: SeedSummary) -> None:
    t = summary.totals
    typer.echo(
        f"demo network: {t['organizations']} organizations, {t['stations']} stations"
        f" ({t['slots']} slots), {t['pack_types']} pack types, {t['vehicle_models']} vehicle"
        f" models, {t['vehicles']} vehicles, {t['batteries']} batteries"
        f" ({t['batteries_in_slots']} in slots, {t['batteries_in_vehicles']} in vehicles)"
    )
    created = ", ".join(f"{n} {what}" for what, n in sorted(summary.created.items()))
    typer.echo(f"created: {created}" if created else "already present: nothing created")


def seed_demo_command() -> None:
    """Create the demo network (operators, stations, OEMs, vehicles, batteries); idempotent."""
    require_database(get_settings())
    with get_session_factory().begin() as session:
        summary = seed_demo(session)
    echo_seed_summary(summary)
