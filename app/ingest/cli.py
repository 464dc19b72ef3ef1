"""`swapfleet ingest` and `swapfleet db prune`; the lead mounts these on app/cli.py."""

import logging
import signal
import threading
from types import FrameType
from typing import Annotated

import psycopg
import typer

from app.core import clock
from app.core.config import Settings, get_settings
from app.ingest.client import IngestService, libpq_url
from app.ingest.partitions import PruneResult
from app.ingest.partitions import prune as prune_partitions

app = typer.Typer(help="MQTT telemetry ingest", no_args_is_help=True)
log = logging.getLogger(__name__)


@app.command("run")
def run(
    client_id: Annotated[
        str | None, typer.Option(help="MQTT client id; stable across restarts, one per process")
    ] = None,
    share_group: Annotated[
        str | None, typer.Option(help="Shared-subscription group to split the stream")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Port for Prometheus metrics; 0 to disable")
    ] = None,
) -> None:
    """Subscribe to the telemetry topics and store every record."""
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    port = settings.ingest_metrics_port if metrics_port is None else metrics_port
    if port:
        from prometheus_client import start_http_server

        try:
            start_http_server(port)
        except OSError as exc:
            typer.echo(
                f"error: port {port} for the ingest's metrics is taken ({exc.strerror}); choose "
                "another with --metrics-port or SWAPFLEET_INGEST_METRICS_PORT (0 disables it)",
                err=True,
            )
            raise typer.Exit(1) from None
    try:
        service = IngestService(settings, client_id=client_id, share_group=share_group)
    except ValueError as exc:  # a setting that cannot work (a share group over MQTT 3.1.1)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    stopping = threading.Event()
    threading.Thread(
        target=prune_periodically, args=(settings, stopping), name="prune", daemon=True
    ).start()

    def _graceful(signum: int, frame: FrameType | None) -> None:
        log.info("event=ingest_stopping signal=%d", signum)
        stopping.set()
        service.request_stop()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    service.run_forever()


def prune_once(settings: Settings) -> PruneResult:
    with psycopg.connect(libpq_url(settings.sqlalchemy_url()), autocommit=True) as conn:
        return prune_partitions(conn, settings, clock.now())


def prune_periodically(settings: Settings, stopping: threading.Event) -> None:
    """Retention and partitions ahead, from the process that writes the partitions."""
    while not stopping.is_set():
        try:
            result = prune_once(settings)
            log.info("event=prune dropped=%d", len(result.dropped))
        except psycopg.Error as exc:
            # The database may be down; the ingest itself copes, the next round retries.
            log.warning("event=prune_failed error=%s", type(exc).__name__)
        stopping.wait(settings.prune_interval_s)


@app.command("prune")
def prune() -> None:
    """Drop telemetry partitions older than their retention and create future ones."""
    result = prune_once(get_settings())
    typer.echo(
        f"dropped {len(result.dropped)} partition(s)"
        + (": " + ", ".join(result.dropped) if result.dropped else "")
        + f"; partitions exist {result.created_ahead_months} month(s) ahead"
    )
