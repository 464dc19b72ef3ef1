from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from app.core import clock
from app.core.config import get_settings, normalize_database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url or get_settings().sqlalchemy_url())
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
    if revision == "head":
        ensure_partitions(database_url)


def ensure_partitions(database_url: str | None = None) -> None:
    """The record tables' monthly partitions from this month on, by the clock the code asks
    (the migration made them for the day it first ran; the ingest adds more as it goes)."""
    from app.ingest.partitions import create_ahead

    settings = get_settings()
    engine = create_engine(normalize_database_url(database_url or settings.sqlalchemy_url()))
    try:
        with engine.begin() as connection:
            driver = connection.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            create_ahead(driver, clock.now(), settings.partitions_ahead_months)
    finally:
        engine.dispose()
