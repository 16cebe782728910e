"""The helpdesk API under ``/api/helpdesk/`` (INTERFACE §5): the console's actions for programs.

Every request carries a bearer access token with scope ``helpdesk``, issued from a full session of
a member of staff; the service checks it (and the role) before anything else.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, request

from ..errors import InvalidInput
from ..web import services
from ..web.api import json_object, respond, string

bp = Blueprint("helpdesk_api", __name__, url_prefix="/api/helpdesk")


def _token() -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def _actor(db: Any) -> str:
    return f"staff:{services().helpdesk.staff_of_token(db, _token())}"


def _body() -> dict[str, Any]:
    return json_object() if request.content_length else {}


def _time(name: str) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO 8601 time") from None
    if value.tzinfo is None:
        raise InvalidInput(f"{name} must carry a time zone (e.g. Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # the zone takes it out of the years 1-9999
        raise InvalidInput(f"{name} is out of range") from None


@bp.get("/professionals")
def search() -> Response:
    svc = services()
    with svc.db.transaction() as db:
        _actor(db)
        found = svc.helpdesk.search(db, request.args.get("q", ""))
    return respond({"professionals": found})


@bp.get("/professionals/<matricule>")
def detail(matricule: str) -> Response:
    svc = services()
    with svc.db.transaction() as db:
        return respond(svc.helpdesk.detail(db, matricule, viewer=_actor(db)))


@bp.post("/professionals/<matricule>/revoke-card")
def revoke_card(matricule: str) -> Response:
    svc = services()
    data = json_object()
    reason = string(data, "reason", max_length=16)
    card_id = data.get("card_id")
    if card_id is not None:
        try:
            card_id = uuid.UUID(str(card_id))
        except ValueError:
            raise InvalidInput("card_id is not a card id") from None
    with svc.db.transaction() as db:
        result = svc.helpdesk.revoke_cards(
            db, matricule, reason=reason, actor=_actor(db), card_id=card_id
        )
    svc.outbox_worker.notify()
    return respond(result.to_dict())


@bp.post("/professionals/<matricule>/lock")
def lock(matricule: str) -> Response:
    svc = services()
    note = str(_body().get("note") or "")[:500]
    with svc.db.transaction() as db:
        svc.helpdesk.lock(db, matricule, actor=_actor(db), note=note)
    svc.outbox_worker.notify()
    return respond({"status": "locked"})


@bp.post("/professionals/<matricule>/unlock")
def unlock(matricule: str) -> Response:
    svc = services()
    note = str(_body().get("note") or "")[:500]
    with svc.db.transaction() as db:
        svc.helpdesk.unlock(db, matricule, actor=_actor(db), note=note)
    return respond({"status": "active"})


@bp.post("/professionals/<matricule>/end-sessions")
def end_sessions(matricule: str) -> Response:
    svc = services()
    with svc.db.transaction() as db:
        ended = svc.helpdesk.end_sessions(db, matricule, actor=_actor(db))
    svc.outbox_worker.notify()
    return respond({"sessions_ended": ended})


@bp.post("/professionals/<matricule>/letters")
def issue_letter(matricule: str) -> Response:
    svc = services()
    with svc.db.transaction() as db:
        issued = svc.helpdesk.issue_letter(db, matricule, actor=_actor(db))
    return respond(issued.to_dict(), 201)


@bp.get("/audit")
def audit_trail() -> Response:
    svc = services()
    subject = request.args.get("subject")
    with svc.db.transaction() as db:
        actor = _actor(db)
        filters: dict[str, Any] = {
            "subjects": [subject] if subject else [],
            "tag": request.args.get("tag") or None,
            "actor": request.args.get("actor") or None,
            "since": _time("since"),
            "until": _time("until"),
        }
        limit = request.args.get("limit", "200")
        events = svc.helpdesk.events(db, **filters, limit=int(limit) if limit.isdigit() else 200)
        if request.args.get("format") == "csv":
            svc.helpdesk.exported(db, actor=actor, filters=filters, count=len(events))
            response = Response(svc.helpdesk.events_csv(events), mimetype="text/csv")
            response.headers["Content-Disposition"] = 'attachment; filename="audit.csv"'
            response.headers["Cache-Control"] = "no-store"
            return response
        return respond({"events": svc.helpdesk.events_json(events)})
