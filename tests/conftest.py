"""Shared fixtures.

The whole suite runs once per database: ``pytest`` (SQLite, the embedded default) and
``pytest --db=postgresql`` (the machine's PostgreSQL at 127.0.0.1:5432; override the server with
``AUTHSVC_TEST_PG_ADMIN_URL``). Each PostgreSQL run creates its own database and drops it at the end;
each test starts from a freshly migrated, empty schema.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from authsvc import create_app, migrate
from authsvc.app import Services
from authsvc.clock import FrozenClock
from authsvc.config import Settings, load_settings
from authsvc.db import Base, Database, make_engine
from authsvc.security.passwords import CHEAP

pytest_plugins = ["tests.cards", "tests.mailserver"]

PG_ADMIN_URL = os.environ.get(
    "AUTHSVC_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TEST_SECRET = "test-secret-key-" + "x" * 40


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("sqlite", "postgresql"),
        default=os.environ.get("AUTHSVC_TEST_DB", "sqlite"),
        help="database the suite runs on (default: sqlite)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"authsvc test database: {config.getoption('--db')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--db") == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL's real concurrency (run with --db=postgresql)")
    for item in items:
        if "postgresql_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def db_kind(pytestconfig: pytest.Config) -> str:
    return str(pytestconfig.getoption("--db"))


# --- databases -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _database_template(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database for the session: a SQLite file to copy, or a PostgreSQL database."""
    if db_kind == "sqlite":
        path = tmp_path_factory.mktemp("template") / "template.sqlite3"
        engine = make_engine(f"sqlite:///{path}", create=True)
        migrate.upgrade(engine)
        engine.dispose()
        yield str(path)
        return

    name = f"authsvc_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.exit(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc.orig}", returncode=3)
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _reset_postgresql(url: str) -> None:
    from authsvc.audit.service import CHAINS as audit_chains

    engine = make_engine(url)
    if migrate.current_revision(engine) != migrate.head_revision():
        migrate.upgrade(engine)  # a test moved the schema
    tables = [t.name for t in Base.metadata.sorted_tables]
    with engine.begin() as conn:
        # the audit trail refuses TRUNCATE (as it should): lift its triggers for the reset only
        for table in ("audit_events", "audit_chain_heads"):
            conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        conn.exec_driver_sql(
            "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
        )
        for chain in audit_chains:  # the heads the migrations made
            conn.exec_driver_sql(
                "INSERT INTO audit_chain_heads (chain, seq, hash) VALUES (%s, 0, %s)",
                (chain, "0" * 64),
            )
        for table in ("audit_events", "audit_chain_heads"):
            conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    engine.dispose()


@pytest.fixture
def database_url(db_kind: str, _database_template: str, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database for one test."""
    if db_kind == "sqlite":
        path = tmp_path / "authsvc.sqlite3"
        shutil.copyfile(_database_template, path)
        yield f"sqlite:///{path}"
        return
    yield _database_template
    _reset_postgresql(_database_template)


# --- settings, services, app ---------------------------------------------------------------------


@pytest.fixture
def instance_dir(tmp_path: Path) -> Path:
    path = tmp_path / "instance"
    path.mkdir()
    return path


@pytest.fixture
def env(instance_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The process environment of an instance under test (also what CLI commands see)."""
    for name in list(os.environ):
        if name.startswith("AUTHSVC_") and not name.startswith("AUTHSVC_TEST_"):
            monkeypatch.delenv(name)
    values = {
        "AUTHSVC_INSTANCE_DIR": str(instance_dir),
        "AUTHSVC_DATABASE_URL": database_url,
        "AUTHSVC_SECRET_KEY": TEST_SECRET,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(env)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def services(settings: Settings, clock: FrozenClock) -> Iterator[Services]:
    svc = Services.from_settings(settings, clock=clock, argon2=CHEAP)
    yield svc
    svc.close()


@pytest.fixture
def db(services: Services) -> Database:
    return services.db


@pytest.fixture
def app(settings: Settings, services: Services):  # type: ignore[no-untyped-def]
    return create_app(settings, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def authsvc_log() -> Iterator[list[logging.LogRecord]]:
    """Every record the ``authsvc`` loggers emit during the test (they do not propagate)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("authsvc")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(previous)


def log_text(records: list[logging.LogRecord]) -> str:
    return "\n".join(record.getMessage() for record in records)


# --- the command line ----------------------------------------------------------------------------


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def last_error_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


class CLI:
    """Runs ``authsvc`` in-process, as :func:`authsvc.cli.main` does for the installed command."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> CliResult:
        from authsvc.cli import main

        self.capsys.readouterr()
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return CliResult(code, out, err)


@pytest.fixture
def cli(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> CLI:
    return CLI(capsys)


def run_authsvc(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60):
    """Run the installed ``authsvc`` command in a subprocess (what an operator does)."""
    exe = Path(sys.executable).with_name("authsvc")
    return subprocess.run(
        [str(exe), *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
