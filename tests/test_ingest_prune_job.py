import threading
import time

import psycopg
from app.core import clock
from app.core.config import get_settings
from sqlalchemy import Engine

from app.ingest.cli import prune_periodically
from app.ingest.client import libpq_url
from app.ingest.partitions import add_months, month_start, partition_name


def partition_exists(conn: psycopg.Connection[tuple[object, ...]], name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone() == (True,)


def test_running_ingest_recreates_partitions_ahead_until_stopped(engine: Engine) -> None:
    settings = get_settings().model_copy(update={"prune_interval_s": 0.1})
    furthest = partition_name(
        "charging_samples",
        add_months(month_start(clock.now()), settings.partitions_ahead_months),
    )
    with psycopg.connect(libpq_url(settings.sqlalchemy_url()), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {furthest}")
        assert not partition_exists(conn, furthest)
        stopping = threading.Event()
        job = threading.Thread(target=prune_periodically, args=(settings, stopping))
        job.start()
        deadline = time.monotonic() + 10
        while not partition_exists(conn, furthest) and time.monotonic() < deadline:
            time.sleep(0.05)
        stopping.set()
        job.join(5)
        assert partition_exists(conn, furthest)
    assert not job.is_alive()
