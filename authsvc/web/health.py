"""``/healthz``: is this instance able to serve? (database reachable, schema at head or newer)

During a rolling upgrade (docs/deployment.md) the new release's ``authsvc db upgrade`` runs first:
its migrations only add (expand), so the instances of the release before keep serving on the
newer schema. A schema revision this version does not know is therefore one of a newer release,
and the instance stays healthy on it; a schema older than this version needs is not.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from .. import schema_version
from . import services

log = logging.getLogger("authsvc.health")
bp = Blueprint("health", __name__)


def _head() -> str | None:
    return schema_version.shipped().head


def _known() -> frozenset[str]:
    """Every revision this version ships."""
    return schema_version.shipped().known


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    engine = services().db.engine
    try:
        current = schema_version.current(engine)
    except SQLAlchemyError as exc:
        log.warning("healthz: database unreachable: %s", exc.__class__.__name__)
        return jsonify(status="unavailable", database="unreachable"), 503
    if current is not None and current != _head() and current not in _known():
        # a newer release migrated the database (expand first): this one keeps serving
        return jsonify(status="ok", database="ok", schema=current, expected=_head()), 200
    if current != _head():
        return (
            jsonify(
                status="unavailable",
                database="schema not up to date: run `authsvc db upgrade`",
                schema=current,
                expected=_head(),
            ),
            503,
        )
    return jsonify(status="ok", database="ok", schema=current), 200
