"""Persistence: the declarative base, the engine, and units of work.

One :class:`Database` per process holds the engine and a session factory. A unit of work is a
``with db.transaction() as session:`` block: it commits when the block ends and rolls back when it
raises, so that a multi-row change happens whole or not at all (SECURITY "Nothing lost, nothing
half-done").

SQLite (the embedded default) is opened in WAL mode with foreign keys on and full durability;
a unit of work starts with ``BEGIN IMMEDIATE`` (writers queue on SQLite's lock instead of failing
when a read transaction tries to become a write transaction), a read-only one
(:meth:`Database.read_transaction`) with a plain ``BEGIN``, which in WAL mode reads a snapshot
without blocking anyone. PostgreSQL gets a bounded pool with pre-ping and a connect timeout;
read-only units of work run in ``REPEATABLE READ``, one consistent snapshot.

Each session carries :attr:`Database.session_info` in ``session.info`` (e.g. the audit chain's
key), so that services find it without taking it as an argument.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on SQLite as on PostgreSQL.

    Naive datetimes are refused on the way in: a naive "now" is how expiry checks go wrong.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - SQLAlchemy's own hook


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")  # a committed change survives a power cut
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get("authsvc_read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class DatabaseMissing(Exception):
    """The SQLite file does not exist (and this is not ``authsvc db upgrade``, which creates it)."""


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def create_sqlite_file(url: str) -> None:
    """Create the SQLite file, and its folder, readable by their owner only."""
    path = sqlite_path(url)
    if path is None or path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)


def make_engine(
    url: str, *, pool_size: int = 5, max_overflow: int = 10, create: bool = False
) -> Engine:
    """The engine for ``url``; an absent SQLite file is created only with ``create=True``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None and not path.exists():
            if not create:
                raise DatabaseMissing(f"there is no database at {path}")
            create_sqlite_file(url)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,  # errors are logged: never with password hashes, emails, codes
        )
        _configure_sqlite(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = 5
    return create_engine(
        url,
        connect_args=connect_args,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=10,
        pool_recycle=1800,
        hide_parameters=True,
    )


class Database:
    """The engine and the session factory of one process."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_options)
        self.session_info: dict[str, Any] = {}
        self._sessions = sessionmaker(
            self.engine, expire_on_commit=False, autoflush=True, info=self.session_info
        )
        self._read_engine = self.engine.execution_options(
            authsvc_read_only=True,
            **({"isolation_level": "REPEATABLE READ"} if self.dialect == "postgresql" else {}),
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        """A session whose transaction the caller commits or rolls back."""
        return self._sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read_transaction(self) -> Iterator[Session]:
        """A read-only unit of work on one consistent snapshot that blocks no writer."""
        with self._sessions(bind=self._read_engine) as session:
            yield session  # closing the session rolls its transaction back

    def ping(self) -> None:
        with self._read_engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
