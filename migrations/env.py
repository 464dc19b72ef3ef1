from alembic import context
from app.core.config import get_settings, normalize_database_url
from app.core.db import Base
from sqlalchemy import create_engine, pool

import app.models  # noqa: F401  (registers every table on Base.metadata)

target_metadata = Base.metadata


def database_url() -> str:
    # `swapfleet db upgrade` and the tests pass the URL explicitly; plain `alembic` uses settings.
    url = context.config.get_main_option("sqlalchemy.url")
    return normalize_database_url(url) if url else get_settings().sqlalchemy_url()


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = context.config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
