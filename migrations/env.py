"""Alembic environment: runs migrations on the engine authsvc hands over (``authsvc db upgrade``).

Used outside authsvc (``alembic -c …``), it reads the database URL from ``AUTHSVC_DATABASE_URL``
through authsvc's own settings, so there is one place that knows where the database is.
"""

from __future__ import annotations

from alembic import context

import authsvc.models  # noqa: F401 - registers every table on the metadata
from authsvc.db import Base, make_engine

config = context.config
#: the advisory lock that serialises concurrent `authsvc db upgrade` runs on PostgreSQL
MIGRATION_LOCK = 0x61757468
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from authsvc.config import load_settings

        engine = make_engine(load_settings().database_url)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Two instances deploying at once take turns: the lock lasts until the commit.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("authsvc migrations run online only (authsvc db upgrade)")
run_migrations_online()
