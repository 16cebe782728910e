"""Persistence: the declarative base, the engine, and units of work.

One :class:`Database` per process holds the engine and a session factory. A unit of work is a
``with db.transaction() as session:`` block: it commits when the block ends and rolls back when it
raises, so that a multi-row change happens whole or not at all (SECURITY "Nothing lost, nothing
half-done").

SQLite (the embedded default) is opened in WAL mode with foreign keys on and full durability;
a unit of work starts with ``BEGIN IMMEDIATE`` (writers queue on SQLite's lock instead of failing
when a read transaction tries to become a write transaction), a read-only one
(:meth:`Database.read_transaction`) with a plain ``BEGIN``, which in WAL mode reads a snapshot
without blocking anyone. SQLite has one writer at a time, and a writer that finds the lock taken
polls for it, sleeping 1, 2, 5, 10… ms between tries (its busy handler): under load most of a
writer's time went to those sleeps. So writers first queue on :class:`WriterQueue` — a lock
shared by the threads of a process and, through ``flock`` on a file beside the database, by every
process on the host — which wakes the next writer the moment the last one commits. PostgreSQL gets
a bounded pool with pre-ping and a connect timeout; read-only units of work run in
``REPEATABLE READ``, one consistent snapshot. On both, the hot reads of one statement (userinfo,
introspection, a client's lookup, a sign-in's first read) run outside any transaction, which
spares them the ``BEGIN`` and ``ROLLBACK`` (``read_transaction(snapshot=False)``: on PostgreSQL two
round trips); a read of Core statements alone can skip the ORM session too
(:meth:`Database.read_connection`).

Each session carries :attr:`Database.session_info` in ``session.info`` (e.g. the audit chain's
key), so that services find it without taking it as an argument.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Executable,
    MetaData,
    create_engine,
    event,
    text,
)
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
        options = connection.get_execution_options()
        if options.get("authsvc_statements", False):
            return  # each statement on its own (SQLite's autocommit): its own snapshot
        read_only = options.get("authsvc_read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class WriterQueue:
    """Writers of one SQLite file, one at a time, woken in turn (see the module's docstring).

    A thread takes the process's lock, then an exclusive ``flock`` on ``<database>.writers``
    (the kernel queues the processes and wakes one at the release, with no polling). Re-entrant
    within a thread: a unit of work opened inside another (which SQLite itself would refuse after
    its busy timeout) keeps its old behaviour instead of deadlocking here. Writers that do not
    come through here (another program, the ``sqlite3`` shell) still meet SQLite's own lock and
    busy timeout, as before.
    """

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".writers")
        self._lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        # one descriptor per process: a forked child (gunicorn, granian workers) opens its own,
        # since a descriptor inherited from the parent would share the parent's lock
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                fcntl.flock(self._file(), fcntl.LOCK_EX)  # waits without holding the GIL
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._file(), fcntl.LOCK_UN)


class DeferredWrites:
    """Writes recorded while a request only reads, made later in one short write transaction.

    A token request authenticates its client, signs its token and builds its audit event without
    needing the write lock; on SQLite, a ``BEGIN IMMEDIATE`` taken at the start would hold the
    database's only write lock through all of that Python work, and writers on every worker would
    queue for it. Recorded here instead, the statements (:meth:`execute`) and the steps that must
    read inside the write transaction (:meth:`later`, e.g. appending to the audit chain) run in
    order by :meth:`apply`, in the caller's write transaction: all of them, or none. Nothing is
    answered before that transaction commits.
    """

    def __init__(self) -> None:
        self._steps: list[Callable[[Session], object]] = []
        #: run once the writes are committed (:class:`GroupCommit` may retry the steps)
        self.committed: list[Callable[[], object]] = []

    def __bool__(self) -> bool:
        return bool(self._steps)

    def execute(
        self,
        statement: Executable,
        params: dict[str, Any],
        *,
        expect_row: bool = False,
        guard: str = "",
    ) -> None:
        """Record a statement; with ``expect_row``, :meth:`apply` raises :class:`StaleRead` if
        it changes no row (a guard: what the request read no longer holds), whose ``guard`` is
        the one given here (what the caller answers depends on which guard failed)."""

        def step(session: Session) -> None:
            # on the session's connection: a Core statement needs none of the ORM's execution
            # (~35 µs each; nothing of the ORM is pending in a group commit's session)
            result = session.connection().execute(statement, params)
            if expect_row and not result.rowcount:
                raise StaleRead(str(statement).split("\n", 1)[0], guard=guard)

        self._steps.append(step)

    def later(self, step: Callable[[Session], object]) -> None:
        self._steps.append(step)

    def on_commit(self, callback: Callable[[], object]) -> None:
        self.committed.append(callback)

    def apply(self, session: Session) -> None:
        for step in self._steps:
            step(session)


class GroupCommit:
    """The deferred writes of this process's concurrent requests, committed together.

    A commit is durable only once it is on disk (SQLite's ``synchronous = FULL``, PostgreSQL's
    WAL flush): one ``fsync`` each, and on SQLite the only write lock is held meanwhile, so that
    commits, not the CPU, limited the token endpoint. Here the first request to arrive commits
    its writes at once (it leads); those that arrive while it does wait, and the next of them
    commits all of theirs in one transaction, one ``fsync`` for all (group commit, as databases
    do in their own logs). Nobody's response is sent before its own writes are committed, and
    every request's writes are still made whole or not at all: when a transaction of several
    fails, it is rolled back and each request's writes are made again alone, so that one
    request's failure (a client disabled meanwhile) is its own.

    ``around`` wraps each transaction (the audit trail's :func:`~authsvc.audit.service.batch`:
    the chain head is read once per transaction).
    """

    def __init__(
        self,
        db: Database,
        around: Callable[[Session], AbstractContextManager[object]] | None = None,
    ) -> None:
        self._db = db
        self._around = around
        self._changed = threading.Condition()
        self._pending: list[_Ticket] = []
        self._busy = False
        #: transactions made, and writes committed, since the start (metrics, tests)
        self.transactions = 0
        self.committed = 0

    def commit(self, writes: DeferredWrites) -> None:
        """Make ``writes`` in a transaction, maybe with others'; raise what made them fail."""
        ticket = _Ticket(writes)
        with self._changed:
            self._pending.append(ticket)
            while self._busy and not ticket.done:
                self._changed.wait()
            if not ticket.done:
                self._busy = True
                group, self._pending = self._pending, []
        if not ticket.done:
            try:
                self._run(group)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
        if ticket.error is not None:
            raise ticket.error
        for callback in writes.committed:
            callback()

    def _run(self, group: list[_Ticket]) -> None:
        try:
            self._transaction(group)
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
            else:  # each alone: the failure is the one request's, not the others'
                for ticket in group:
                    try:
                        self._transaction([ticket])
                    except Exception as alone:
                        ticket.error = alone
        finally:
            for ticket in group:
                if not ticket.committed and ticket.error is None:  # interrupted (worker stopping)
                    ticket.error = InterruptedError("the group commit was interrupted")
                ticket.done = True

    def _transaction(self, group: list[_Ticket]) -> None:
        with self._db.transaction() as session:
            if self._around is None:
                for ticket in group:
                    ticket.writes.apply(session)
            else:
                with self._around(session):
                    for ticket in group:
                        ticket.writes.apply(session)
        for ticket in group:
            ticket.committed = True
        self.transactions += 1
        self.committed += len(group)


@dataclass(eq=False)
class _Ticket:
    writes: DeferredWrites
    done: bool = False
    committed: bool = False
    error: Exception | None = None


class StaleRead(Exception):
    """A guarded deferred write found that what the request had read has changed meanwhile;
    ``guard`` names which of its guards (:meth:`DeferredWrites.execute`)."""

    def __init__(self, message: str, *, guard: str = "") -> None:
        super().__init__(message)
        self.guard = guard


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
        # each statement on its own, no BEGIN and ROLLBACK around it (PostgreSQL: two round
        # trips; SQLite: ~25 µs of Python, _on_begin)
        self._statement_engine = (
            self.engine.execution_options(authsvc_read_only=True, isolation_level="AUTOCOMMIT")
            if self.dialect == "postgresql"
            else self.engine.execution_options(authsvc_read_only=True, authsvc_statements=True)
        )
        path = sqlite_path(url) if self.dialect == "sqlite" else None
        on_disk = path is not None and str(path) != ":memory:"
        self.writers: WriterQueue | None = WriterQueue(path) if on_disk else None  # type: ignore[arg-type]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def single_writer(self) -> bool:
        """Whether one write transaction at a time holds the whole database (SQLite): what a
        request does inside one, every other writer waits for."""
        return self.dialect == "sqlite"

    def session(self) -> Session:
        """A session whose transaction the caller commits or rolls back."""
        return self._sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back if it raises."""
        if self.writers is None:
            with self._sessions() as session, session.begin():
                yield session
            return
        with self.writers.turn(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read_transaction(self, *, snapshot: bool = True) -> Iterator[Session]:
        """A read-only unit of work on one consistent snapshot that blocks no writer.

        ``snapshot=False`` is for a unit of work of one statement, or whose statements need not
        agree with each other (each reads what is committed when it runs): it runs them outside
        a transaction, each its own snapshot, which saves the ``BEGIN`` and the ``ROLLBACK`` — on
        PostgreSQL two round trips, half of those of a one-query read (with the pool's
        pre-ping); on SQLite, their Python.
        """
        engine = self._read_engine if snapshot else self._statement_engine
        # never flushed: a change made to an object by mistake is dropped at the close (outside
        # a transaction, a flush would commit it at once)
        with self._sessions(bind=engine, autoflush=False) as session:
            yield session  # closing the session rolls its transaction back

    @contextmanager
    def read_connection(self, *, snapshot: bool = True) -> Iterator[Connection]:
        """:meth:`read_transaction` as a Core connection, without an ORM session: for reads that
        load no ORM object (userinfo's one query). The session's unit of work and its ORM
        execution cost ~85 µs of Python per read (SQLite, measured: 156 → 71 µs for userinfo's
        query)."""
        engine = self._read_engine if snapshot else self._statement_engine
        with engine.connect() as connection:
            yield connection  # closing it rolls its transaction back

    def ping(self) -> None:
        with self._read_engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
