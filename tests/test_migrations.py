"""`alembic upgrade head` on an empty database gives exactly the models' schema."""

import re

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from app.core.config import normalize_database_url
from app.core.db import Base
from app.core.migrate import alembic_config
from sqlalchemy import Engine, create_engine

import app.models  # noqa: F401  (every table on the metadata)
from tests.conftest import ADMIN_URL, TEST_DB, recreate_database

MONTHLY_PARTITION = re.compile(r"_p\d{4}_\d{2}$")


def not_a_partition(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # Monthly partitions are created by the migration and the ingest, not declared as models.
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return not (table and MONTHLY_PARTITION.search(table))


def test_migrations_give_exactly_the_models_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": not_a_partition}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_migrations_downgrade_to_empty_and_upgrade_again() -> None:
    from alembic import command

    name = TEST_DB + "_roundtrip"
    recreate_database(name)
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    probe = create_engine(normalize_database_url(url))
    try:
        with probe.connect() as connection:
            tables = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'alembic_version'"
            ).scalar()
            types = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
                " WHERE n.nspname = 'public' AND t.typtype = 'e'"
            ).scalar()
        assert (tables, types) == (0, 0)
        command.upgrade(config, "head")
    finally:
        probe.dispose()
