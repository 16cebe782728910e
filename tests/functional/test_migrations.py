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


def test_the_serving_processes_schema_check_is_alembics(db: Database) -> None:
    """/healthz reads the revisions without Alembic (authsvc/schema_version.py): the same answers."""
    import subprocess
    import sys

    from alembic.script import ScriptDirectory

    from authsvc import schema_version

    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    shipped = schema_version.shipped()
    assert shipped.known == {s.revision for s in scripts.walk_revisions()}
    assert shipped.head == scripts.get_current_head() == migrate.head_revision()
    assert schema_version.current(db.engine) == migrate.current_revision(db.engine)
    migrate.downgrade(db.engine, "0007")
    assert schema_version.current(db.engine) == migrate.current_revision(db.engine) == "0007"
    migrate.downgrade(db.engine, "base")
    assert schema_version.current(db.engine) is None
    migrate.upgrade(db.engine)
    assert schema_version.current(db.engine) == shipped.head
    # and a serving process does not load Alembic (nor Mako, nor Pygments): ~10 MB per worker
    code = (
        "import sys; from authsvc import create_app; import authsvc.web.health; "
        "print(sorted(m for m in ('alembic', 'mako', 'pygments') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
