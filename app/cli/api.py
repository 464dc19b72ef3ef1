"""`swapfleet api`: serve the REST API."""

import os
from typing import Annotated

import typer
import uvicorn

from app.cli.common import PortTaken, fail, require_database, require_free_port
from app.core.config import Settings, get_settings


def api(
    host: Annotated[str | None, typer.Option(help="Default: SWAPFLEET_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: SWAPFLEET_API_PORT")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes serving requests. Default: SWAPFLEET_API_WORKERS, else one per CPU",
        ),
    ] = None,
) -> None:
    """Serve the REST API."""
    settings = get_settings()
    require_database(settings)
    host, port = host or settings.api_host, port or settings.api_port
    try:
        require_free_port(host, port, "the API", "--port or SWAPFLEET_API_PORT")
    except PortTaken as exc:
        raise fail(str(exc)) from None
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        # One Python process runs one request's Python at a time: a process per core.
        workers=workers or api_workers(settings),
        # The supervisor of several workers replaces one that has not answered its ping
        # within this; uvicorn's 5 s killed workers still importing on a busy machine.
        timeout_worker_healthcheck=30,
        log_level=settings.log_level.lower(),
        # The Prometheus middleware already counts requests; uvicorn's access log would double
        # the log volume for nothing.
        access_log=False,
        # The OCPP gateway answers a message above SWAPFLEET_OCPP_MAX_MESSAGE_BYTES with a
        # CALLERROR; a frame above this closes the connection (1009) before it is buffered.
        ws_max_size=16 * settings.ocpp_max_message_bytes,
    )


def api_workers(settings: Settings) -> int:
    # The CPUs this process may run on (a container's cpuset), not the host's count.
    return settings.api_workers or len(os.sched_getaffinity(0)) or 1
