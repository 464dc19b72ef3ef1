from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated

from fastapi import Depends
from sqlalchemy import Engine, MetaData, create_engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.config import get_settings
from app.errors import CommitFailed

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


def unit_of_work() -> Iterator[Session]:
    """One transaction per request: committed if the route returns, rolled back if it raises
    (closing the session rolls back what was not committed)."""
    with get_session_factory()() as session:
        yield session
        try:
            session.commit()
        except IntegrityError:
            raise  # the database refused the data: a conflict, rendered with its constraint
        except DBAPIError as exc:
            # Whatever else failed the commit (a lost connection, a failover, a trigger), the
            # transaction is gone and nothing was stored: the client may retry.
            raise CommitFailed(f"the commit failed ({type(exc.orig).__name__})") from exc


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
