"""Alembic is the only way the schema is made, and it matches the models on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from authsvc import migrate
from authsvc.db import Base, Database


def test_schema_is_at_head(db: Database) -> None:
    assert migrate.current_revision(db.engine) == migrate.head_revision()


def test_models_match_the_migrations(db: Database) -> None:
    import authsvc.models  # noqa: F401

    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_downgrade_to_nothing_and_up_again(db: Database) -> None:
    migrate.downgrade(db.engine, "base")
    assert migrate.current_revision(db.engine) is None
    migrate.upgrade(db.engine)
    assert migrate.current_revision(db.engine) == migrate.head_revision()


def test_concurrent_upgrades_take_turns(db: Database, env: dict[str, str]) -> None:
    """Two instances deploying at once (two processes): both succeed, the schema is made once."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    migrate.downgrade(db.engine, "base")
    exe = str(Path(sys.executable).with_name("authsvc"))
    procs = [
        subprocess.Popen(
            [exe, "db", "upgrade"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(60), p.communicate()[1]) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    assert migrate.current_revision(db.engine) == migrate.head_revision()
