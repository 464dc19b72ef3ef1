"""The async routes (GET /v1/batteries/{serial}, POST /v1/swaps) run on psycopg's own pool, not
SQLAlchemy's: against a real `swapfleet api` process, what they answer when the database drops
their connections or is down, and that they recover without a restart."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from app.core.config import normalize_database_url
from app.core.db import POOL_TIMEOUT_S
from app.core.migrate import upgrade
from app.local.embedded_db import EmbeddedDatabase, start_embedded_database
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from tests.conftest import ADMIN_URL, TEST_DATABASE_URL, TEST_DB, recreate_database
from tests.fixtures.api_server import running_api
from tests.fixtures.factories import auth
from tests.fixtures.swap_world import SwapWorld, build_swap_world

POOL_DB = f"{TEST_DB}_async_pool"
POOL_DATABASE_URL = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/" + POOL_DB


def committed_world(url: str) -> SwapWorld:
    engine = create_engine(normalize_database_url(url))
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            return build_swap_world(session, charged_socs=(95.0, 96.0, 97.0))
    finally:
        engine.dispose()


def terminate_backends(database: str) -> int:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


def test_reads_and_swaps_answer_503_once_their_connections_are_killed_then_recover(
    tmp_path: Path,
) -> None:
    recreate_database(POOL_DB)
    upgrade(POOL_DATABASE_URL)
    world = committed_world(POOL_DATABASE_URL)
    serial = world.charged[0].serial
    with (
        running_api(POOL_DATABASE_URL, tmp_path / "api.log") as api,
        httpx.Client(base_url=api.base_url, headers=auth(world.admin_key), timeout=30) as http,
    ):
        # Several connections in the pool: concurrent reads make it grow.
        for _ in range(20):
            assert http.get(f"/v1/batteries/{serial}").status_code == 200
        assert terminate_backends(POOL_DB) > 0, "the server held no connection: nothing tested"

        statuses: list[int] = []
        for _ in range(30):
            response = http.get(f"/v1/batteries/{serial}")
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert response.headers["Retry-After"] == "1"
                assert response.json()["code"] == "DatabaseUnavailable"
        # Never a 500; a dead connection costs one 503 and is dropped, not handed out again.
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[-10:] == [200] * 10, statuses

        terminate_backends(POOL_DB)
        swap_statuses: list[int] = []
        for _ in range(5):
            swap = http.post(
                "/v1/swaps",
                json=world.swap_body(),
                headers={**auth(world.operator_key), "Idempotency-Key": "after-the-kill"},
            )
            swap_statuses.append(swap.status_code)
            if swap.status_code != 503:
                break
        assert swap_statuses[-1] == 201, swap_statuses
        assert set(swap_statuses[:-1]) <= {503}, swap_statuses


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedDatabase]:
    database = start_embedded_database(tmp_path / "pg")
    try:
        yield database
    finally:
        database.stop()


def test_a_read_is_refused_with_503_within_the_pool_timeout_while_the_database_is_down(
    tmp_path: Path, own_postgres: EmbeddedDatabase
) -> None:
    upgrade(own_postgres.url)
    world = committed_world(own_postgres.url)
    serial = world.charged[0].serial
    with (
        running_api(own_postgres.url, tmp_path / "api.log") as api,
        httpx.Client(base_url=api.base_url, headers=auth(world.admin_key), timeout=60) as http,
    ):
        assert http.get(f"/v1/batteries/{serial}").status_code == 200
        own_postgres.stop()

        for _ in range(3):
            started = time.monotonic()
            response = http.get(f"/v1/batteries/{serial}")
            waited = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "1"
            # Refused, not hung: at most the pool's wait for a connection, and some slack.
            assert waited < POOL_TIMEOUT_S + 3, waited
