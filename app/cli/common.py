"""What every command of `swapfleet` shares: failing in one line, the database it needs, the
ports it binds."""

import socket

import typer
from sqlalchemy.engine import make_url

from app.core.config import Settings


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def require_database(settings: Settings) -> str:
    if not settings.database_url:
        raise fail(
            "SWAPFLEET_DATABASE_URL is not set; `swapfleet up` starts an embedded database,"
            " every other command needs the URL"
        )
    return settings.database_url


def display_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


class PortTaken(RuntimeError):
    pass


def require_free_port(host: str, port: int, what: str, setting: str) -> None:
    """Fail in one line, naming the port and how to change it, rather than letting a child die
    with a traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like uvicorn and prometheus_client: a port in TIME_WAIT is not taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortTaken(
                f"port {port} for {what} is taken ({exc.strerror}); choose another with {setting}"
            ) from None
