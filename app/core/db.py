import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Protocol

import psycopg
from fastapi import Depends
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, Insert, MetaData, Select, create_engine
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.core.config import get_settings
from app.core.errors import CommitFailed

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    return create_engine(
        settings.sqlalchemy_url(),
        pool_size=settings.db_pool_size,
        pool_pre_ping=True,
    )


@lru_cache
def get_session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def commit_errors() -> Iterator[None]:
    """How a failed commit reaches the client, for the sync and the async unit of work."""
    try:
        yield
    except IntegrityError:
        raise  # the database refused the data: a conflict, rendered with its constraint
    except DBAPIError as exc:
        # Whatever else failed the commit (a lost connection, a failover, a trigger), the
        # transaction is gone and nothing was stored: the client may retry.
        raise CommitFailed(f"the commit failed ({type(exc.orig).__name__})") from exc


def unit_of_work() -> Iterator[Session]:
    """One transaction per request: committed if the route returns, rolled back if it raises
    (closing the session rolls back what was not committed)."""
    with get_session_factory()() as session:
        yield session
        with commit_errors():
            session.commit()


# scope="function" ends the unit of work (its commit) when the route function returns and
# before the response is sent, so a 2xx always means committed. With FastAPI's default scope
# the commit ran after the response had gone out, and a failed commit was never reported.
SessionDep = Annotated[Session, Depends(unit_of_work, scope="function")]


def streaming_session() -> Iterator[Session]:
    # Nothing commits it: closing the session rolls back whatever it read in.
    with get_session_factory()() as session:
        yield session


# The default ("request") scope keeps this session open until a streamed body has been sent.
StreamingSessionDep = Annotated[Session, Depends(streaming_session, scope="request")]


# ------------------------------------------------------------------------------------------
# The hot routes (a swap, a battery read) are async and run their statements on psycopg's own
# async pool: no hop to a worker thread, no ORM, and none of the per-statement work of
# SQLAlchemy's async layer (greenlets, result processing), which took three times psycopg's
# own client CPU for a one-row read (docs/benchmarks.md, Swaps). Their SQL is still written
# once, as Core statements, compiled once by `prepare`; psycopg prepares it server-side after
# a few runs.


@dataclass(frozen=True)
class Prepared:
    """A Core statement compiled into the SQL psycopg runs (named `%(name)s` parameters)."""

    sql: str
    # The names of the columns it returns, in order (none for a statement without rows):
    # rows are built from them rather than from the cursor's description, which psycopg
    # builds anew, column by column, for every statement.
    columns: tuple[str, ...]


def prepare(statement: Select[*tuple[Any, ...]] | Insert) -> Prepared:
    compiled = statement.compile(dialect=_psycopg_dialect)
    literals = sorted(name for name, value in compiled.params.items() if value is not None)
    if literals:
        # Values compiled in would skip SQLAlchemy's bind processing (enums, for one).
        raise ValueError(f"prepare() takes bindparam()s only; literal values: {literals}")
    columns = tuple(statement.selected_columns.keys()) if isinstance(statement, Select) else ()
    return Prepared(str(compiled), columns)


_psycopg_dialect = PGDialect_psycopg()  # type: ignore[no-untyped-call]


# A row by column name: a RowMapping from a sync session, a dict from psycopg.
NamedRow = Mapping[Any, Any]


class Statements(Protocol):
    """What an async route needs of the database: its statements, in one unit of work, each
    answering with its rows as dicts (none for a statement that returns no rows)."""

    async def rows(
        self, statement: Prepared, parameters: Mapping[str, Any]
    ) -> list[dict[str, Any]]: ...


# One pool per event loop: psycopg's async connections belong to the loop that opened them.
# A server process has one loop; an app embedded several times (test clients in threads)
# has several.
_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool]" = (
    weakref.WeakKeyDictionary()
)


POOL_TIMEOUT_S = 5.0
IDLE = TransactionStatus.IDLE


async def _async_pool() -> AsyncConnectionPool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        settings = get_settings()
        url = settings.sqlalchemy_url().replace("postgresql+psycopg://", "postgresql://", 1)
        # A connection that broke while out of the pool is dropped when it comes back, so
        # after a database restart one request per stale connection fails with 503 (and
        # Retry-After), the next ones get fresh connections.
        pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=settings.db_pool_size,
            open=False,
            name="swapfleet-api",
            # How long a request waits for a connection (all busy, or the database down and
            # the pool reconnecting) before it is answered 503 with Retry-After: a short
            # failover is absorbed, an outage is reported rather than hung on.
            timeout=POOL_TIMEOUT_S,
        )
        _pools[loop] = pool
    if pool.closed:  # opening is safe to race
        await pool.open()
    return pool


async def close_async_pool() -> None:
    """At the end of the app's lifespan: the pool of this event loop, if it has one."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()


def _as_sqlalchemy_error(exc: psycopg.Error, sql: str, parameters: Any) -> DBAPIError:
    # The same exception classes as the sync routes raise, so that one set of handlers
    # (app/core/errors.py) answers both: a constraint is a 409, a lost connection a 503.
    error = DBAPIError.instance(sql, parameters, exc, psycopg.Error)
    assert isinstance(error, DBAPIError)  # it wraps a DBAPI error, so it is one
    return error


async def _connection(
    pool: AsyncConnectionPool, statement: Prepared
) -> psycopg.AsyncConnection[Any]:
    try:
        return await pool.getconn()
    except psycopg.Error as exc:  # PoolTimeout: none free within POOL_TIMEOUT_S, or none at all
        raise _as_sqlalchemy_error(exc, statement.sql, None) from exc


async def _rows(
    connection: psycopg.AsyncConnection[Any], statement: Prepared, parameters: Mapping[str, Any]
) -> list[dict[str, Any]]:
    try:
        cursor = connection.cursor()
        await cursor.execute(statement.sql, parameters)
        if not statement.columns:
            return []
        return [dict(zip(statement.columns, row, strict=True)) for row in await cursor.fetchall()]
    except psycopg.Error as exc:
        raise _as_sqlalchemy_error(exc, statement.sql, parameters) from exc


class TransactionStatements:
    """A request's statements in one transaction on one pooled connection, taken at its first
    statement: a request that runs none (its body failed validation) holds no connection."""

    def __init__(self) -> None:
        self._pool: AsyncConnectionPool | None = None
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def rows(
        self, statement: Prepared, parameters: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        if self._connection is None:
            self._pool = await _async_pool()
            self._connection = await _connection(self._pool, statement)
            await self._connection.set_autocommit(False)
        return await _rows(self._connection, statement, parameters)

    async def commit(self) -> None:
        if self._connection is None:
            return
        with commit_errors():
            try:
                await self._connection.commit()
            except psycopg.Error as exc:
                raise _as_sqlalchemy_error(exc, "COMMIT", None) from exc

    async def close(self) -> None:
        if self._pool is not None and self._connection is not None:
            connection, self._connection = self._connection, None
            if not connection.closed and connection.info.transaction_status != IDLE:
                # A request that failed (a deadlock, a constraint) leaves its transaction
                # open or aborted: end it here, as part of the request, rather than have the
                # pool do it with a warning. A connection that cannot is dropped by putconn.
                with contextlib.suppress(psycopg.Error):
                    await connection.rollback()
            await self._pool.putconn(connection)


class SessionStatements:
    """Statements on a sync session's connection, in its transaction: for sync code that
    calls the async services (the OCPP gateway's handlers) and for tests."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def rows(
        self, statement: Prepared, parameters: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        result = self.session.connection().exec_driver_sql(statement.sql, dict(parameters))
        if not result.returns_rows:
            return []
        if tuple(result.keys()) != statement.columns:
            # The pool's path names the columns from Prepared.columns: they must be
            # PostgreSQL's, or the two paths would name a row's values differently.
            raise RuntimeError(f"columns {tuple(result.keys())} != {statement.columns}")
        return [dict(row) for row in result.mappings()]


class AutocommitStatements:
    """Reads: each statement commits by itself on a connection taken from the pool and given
    back at once, so a read of one statement costs one round trip (no BEGIN, no COMMIT) and
    the request has nothing to clean up."""

    async def rows(
        self, statement: Prepared, parameters: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        pool = await _async_pool()
        connection = await _connection(pool, statement)
        try:
            await connection.set_autocommit(True)
            return await _rows(connection, statement, parameters)
        finally:
            await pool.putconn(connection)


_autocommit_statements = AutocommitStatements()


async def read_statements() -> Statements:
    """For routes that write nothing. A plain coroutine, not a generator: FastAPI resolves it
    without an exit stack, which is a measurable share of a one-row read."""
    return _autocommit_statements


async def async_unit_of_work() -> AsyncIterator[Statements]:
    """The async twin of unit_of_work: one transaction, committed before the response."""
    statements = TransactionStatements()
    try:
        yield statements
        await statements.commit()
    finally:
        await statements.close()


ReadDep = Annotated[Statements, Depends(read_statements)]
# scope="function", as SessionDep: the transaction is committed (and the connection back in
# the pool) before the response is sent.
AsyncUnitDep = Annotated[Statements, Depends(async_unit_of_work, scope="function")]
