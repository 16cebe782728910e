"""Benchmark: importing a 100,000-row directory file, on SQLite and on PostgreSQL.

Not a test: it prints rows per second for a first import (all rows new), a re-import with nothing
changed, and a full re-import where 10 % of the rows changed and 1 % left. Each figure is the best
of ``--repeat`` runs, each on a freshly migrated database.

    .venv/bin/python bench/directory_import.py [--rows 100000] [--repeat 3] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authsvc import matricule, migrate
from authsvc.audit.keys import AuditKeys
from authsvc.db import Database, make_engine
from authsvc.directory.importer import HEADER, import_directory
from authsvc.security.secrets import KeyedHasher
from bench.report import emit

PG_ADMIN_URL = os.environ.get(
    "AUTHSVC_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
PROFESSIONS = ["doctor", "nurse", "dentist", "pharmacist", "physiotherapist", "dietician"]


def make_rows(n: int, seed: int = 1) -> list[list[str]]:
    rng = random.Random(seed)
    rows, seen = [], set()
    start = date(1940, 1, 1)
    while len(rows) < n:
        birth = start + timedelta(days=rng.randrange(0, 365 * 60))
        number = matricule.make(birth, rng.randrange(0, 1000))
        if number in seen:
            continue
        seen.add(number)
        rows.append(
            [
                number,
                rng.choice(["Anne", "Jean", "Léa", "Marc", "Sophie", "Luc"]),
                rng.choice(["Muller", "Schmit", "Weber", "Wagner", "Hoffmann"]),
                rng.choice(PROFESSIONS),
                f"{rng.randrange(100000, 999999)}-{rng.randrange(10, 99)}",
            ]
        )
    return rows


def to_csv(rows: list[list[str]]) -> bytes:
    return ("\n".join([",".join(HEADER)] + [",".join(r) for r in rows]) + "\n").encode()


def bench_database(url: str) -> Database:
    """A Database as Services builds it (with the audit chain's key)."""
    db = Database(url, pool_size=10)
    hasher = KeyedHasher(b"bench-secret-" + b"x" * 32)
    db.session_info["audit_keys"] = AuditKeys.from_hasher(hasher)
    return db


@contextmanager
def fresh_database(kind: str) -> Iterator[Database]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
            migrate.upgrade(make_engine(url, create=True))
            db = bench_database(url)
            try:
                yield db
            finally:
                db.dispose()
        return
    name = f"authsvc_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    db = bench_database(url)
    try:
        yield db
    finally:
        db.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def timed_import(db: Database, data: bytes, *, full: bool) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    with db.transaction() as session:
        result = import_directory(session, data, full=full, actor="bench", source="bench")
    elapsed = time.perf_counter() - start
    d = result.to_dict()
    return elapsed, {k: d[k] for k in ("imported", "updated", "left")}


def run(kind: str, rows: list[list[str]], repeat: int) -> dict[str, object]:
    first = to_csv(rows)
    changed = [list(r) for r in rows[: int(len(rows) * 0.99)]]
    for r in changed[::10]:
        r[2] = r[2] + "-Weber"
    second = to_csv(changed)
    best = {
        "first import": float("inf"),
        "unchanged re-import": float("inf"),
        "full re-import": float("inf"),
    }
    counts = {}
    for _ in range(repeat):
        with fresh_database(kind) as db:
            t1, c1 = timed_import(db, first, full=False)
            t2, c2 = timed_import(db, first, full=False)
            t3, c3 = timed_import(db, second, full=True)
        best["first import"] = min(best["first import"], t1)
        best["unchanged re-import"] = min(best["unchanged re-import"], t2)
        best["full re-import"] = min(best["full re-import"], t3)
        counts = {"first import": c1, "unchanged re-import": c2, "full re-import": c3}
    return {
        name: {"seconds": round(t, 3), "rows_per_s": round(len(rows) / t), **counts[name]}
        for name, t in best.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument(
        "--results", type=Path, default=None, help="also write the JSON line to a file there"
    )
    args = parser.parse_args()
    rows = make_rows(args.rows)
    report: dict[str, object] = {"rows": args.rows}
    for kind in args.db.split(","):
        try:
            report[kind] = run(kind, rows, args.repeat)
        except sa.exc.OperationalError as exc:
            report[kind] = {"skipped": f"database unreachable: {exc.orig}"}
    for kind in args.db.split(","):
        result = report[kind]
        print(f"\n{kind}: {args.rows} rows")
        if isinstance(result, dict) and "skipped" in result:
            print(f"  skipped: {result['skipped']}")
            continue
        for name, figures in result.items():  # type: ignore[union-attr]
            print(f"  {name:<22} {figures['rows_per_s']:>9,} rows/s  ({figures['seconds']} s)")
    print()
    emit(report, "directory-import", args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
