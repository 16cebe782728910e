"""The schema revision, as a serving process needs it (``/healthz``), without Alembic.

Alembic, with Mako and Pygments that it imports, is ~10 MB of every worker's memory (PERFORMANCE
"memory per worker"), and only ``authsvc db upgrade`` needs it. A serving process needs two facts:
the database's revision (the one row of Alembic's ``alembic_version`` table) and the revisions
this version ships (the ``revision`` and ``down_revision`` assignments at the top of each file of
``migrations/versions``, read with :mod:`ast`, never imported). A test checks that both answers
are Alembic's own.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from sqlalchemy import Engine, inspect, text

VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class Revisions:
    known: frozenset[str]
    head: str | None


def _assigned(tree: ast.Module, name: str) -> object:
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        if value is not None and any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(value)
    return None


@cache
def shipped() -> Revisions:
    """The revisions of this version's migrations, and the head (the one nothing revises)."""
    revises: dict[str, set[str]] = {}
    for entry in files("authsvc.migrations.versions").iterdir():
        if not entry.name.endswith(".py") or entry.name.startswith("__"):
            continue
        tree = ast.parse(entry.read_text(encoding="utf-8"))
        revision = _assigned(tree, "revision")
        if not isinstance(revision, str):
            continue
        down = _assigned(tree, "down_revision")
        parents = {down} if isinstance(down, str) else set(down or ())  # type: ignore[call-overload]
        revises[revision] = {p for p in parents if isinstance(p, str)}
    superseded = set().union(*revises.values()) if revises else set()
    heads = sorted(set(revises) - superseded)
    return Revisions(known=frozenset(revises), head=heads[0] if len(heads) == 1 else None)


def current(engine: Engine) -> str | None:
    """The database's revision (None before the first ``authsvc db upgrade``)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()  # noqa: S608
