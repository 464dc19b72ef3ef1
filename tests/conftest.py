"""Real PostgreSQL for every test: a fresh database migrated once with Alembic per session,
and each test inside a transaction that is rolled back."""

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

# Each pytest-xdist worker (and each developer running in parallel) gets its own database.
ADMIN_URL = os.environ.get(
    "SWAPFLEET_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# The controller starts what is missing before its workers exist; they inherit it.
if "PYTEST_XDIST_WORKER" not in os.environ:
    from tests.fixtures.services import ensure_mosquitto, ensure_postgres

    ensure_postgres(ADMIN_URL)
    ensure_mosquitto()
TEST_DB = os.environ.get("SWAPFLEET_TEST_DB", "swapfleet_test") + (
    "_" + os.environ["PYTEST_XDIST_WORKER"] if "PYTEST_XDIST_WORKER" in os.environ else ""
)
TEST_DATABASE_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + TEST_DB
os.environ["SWAPFLEET_DATABASE_URL"] = TEST_DATABASE_URL
os.environ.setdefault("SWAPFLEET_ENVIRONMENT", "test")
# Tests roll swaps up explicitly (roll_up_swaps); a background roll-up in every in-process app
# would race them. Tests of the background roll-up start a server with its own interval.
os.environ.setdefault("SWAPFLEET_SWAP_ROLLUP_INTERVAL_S", "0")
# One API process per `swapfleet api` a test starts, unless the test asks for more
# (--workers): each worker is a Python that imports the app, slow on a busy test machine.
os.environ.setdefault("SWAPFLEET_API_WORKERS", "1")

from app.core.config import get_settings, normalize_database_url  # noqa: E402
from app.core.db import (  # noqa: E402
    SessionStatements,
    Statements,
    async_unit_of_work,
    read_statements,
    streaming_session,
    unit_of_work,
)
from app.core.migrate import upgrade  # noqa: E402
from app.main import create_app  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--clock",
        metavar="ISO_TIME",
        help="run as if it were this UTC time (e.g. 2028-02-29T12:00:00): shifts app.core.clock, "
        "in this process, its xdist workers and every server or ingest a test starts",
    )


def pytest_configure(config: pytest.Config) -> None:
    at = config.getoption("--clock")
    # The controller sets it once; workers and subprocesses inherit the same offset.
    if at and "SWAPFLEET_CLOCK_OFFSET_S" not in os.environ:
        target = datetime.fromisoformat(at).replace(tzinfo=UTC)
        offset = (target - datetime.now(UTC)).total_seconds()
        os.environ["SWAPFLEET_CLOCK_OFFSET_S"] = str(offset)
        get_settings.cache_clear()


def recreate_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    get_settings.cache_clear()
    recreate_database(TEST_DB)
    upgrade(TEST_DATABASE_URL)
    eng = create_engine(normalize_database_url(TEST_DATABASE_URL), pool_size=20)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with engine.connect() as connection:
        transaction = connection.begin()
        db = Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield db
        finally:
            db.close()
            transaction.rollback()


def savepoint_unit_of_work(session: Session) -> Callable[[], Iterator[Session]]:
    """Mirror the real unit of work (commit on success, roll back on error) with a savepoint
    inside the test's transaction, so that a failed request leaves the test usable."""

    def unit() -> Iterator[Session]:
        nested = session.begin_nested()
        try:
            yield session
        except Exception:
            # A failed flush leaves the savepoint inactive but still to be rolled back.
            nested.rollback()
            raise
        else:
            nested.commit()

    return unit


def same_session(session: Session) -> Callable[[], Iterator[Session]]:
    """A streamed response reads through the test's session, which sees its uncommitted rows."""

    def unit() -> Iterator[Session]:
        yield session

    return unit


def async_twin(unit: Callable[[], Iterator[Session]]) -> Callable[[], AsyncIterator[Statements]]:
    """An override of an async unit of work that runs the same unit as the sync one."""
    managed = contextmanager(unit)

    async def twin() -> AsyncIterator[Statements]:
        with managed() as session:
            yield SessionStatements(session)

    return twin


def override_units(
    app: FastAPI, unit: Callable[[], Iterator[Session]], reader: Callable[[], Iterator[Session]]
) -> None:
    """Every database dependency of the app on the test's units: `unit` for the routes that
    write, `reader` for the streamed and the async reads."""
    app.dependency_overrides[unit_of_work] = unit
    app.dependency_overrides[async_unit_of_work] = async_twin(unit)
    app.dependency_overrides[streaming_session] = reader
    app.dependency_overrides[read_statements] = async_twin(reader)


@pytest.fixture
def client(session: Session) -> Iterator[TestClient]:
    app = create_app()
    override_units(app, savepoint_unit_of_work(session), same_session(session))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
