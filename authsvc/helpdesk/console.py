"""The helpdesk console at ``/helpdesk`` (INTERFACE §5): server-rendered pages for the agents.

Every route goes through :func:`console`, which applies the console's access rule
(``Helpdesk.staff_of_session``: a live *full* session of a member of staff, checked here on the
server at every request). A browser without a session, or with a limited one, is sent to the
sign-in page for the smartcard only, and comes back to the page it asked for; a session without a
staff role gets a 403 page.

The pages work without JavaScript. Forms that change something ``POST`` with an anti-CSRF token
bound to the session cookie (a keyed hash of it for this purpose alone), and answer with a
redirect (POST/redirect/GET): what the action did is carried to the next page by a short-lived,
encrypted cookie bound to the session, shown once and then deleted. That is also how the code of a
new activation letter reaches the agent: it is shown once, and is stored nowhere.

The actions themselves — and their audit events — are :class:`~authsvc.helpdesk.service.Helpdesk`'s,
the same for the console, the API and the CLI.
"""

from __future__ import annotations

import base64
import hmac
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import wraps
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID
from flask import Blueprint, redirect, request
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from .. import matricule as matricules
from ..accounts.models import Account
from ..directory.models import Professional
from ..errors import AuthsvcError, InvalidInput, NotFound
from ..oidc.models import Client
from ..security.secrets import Purpose
from ..web import services
from ..web.pages import page_language, render_page
from .service import REASONS, Forbidden

bp = Blueprint("helpdesk_console", __name__, url_prefix="/helpdesk")

SESSION_COOKIE = "authsvc_session"
LOGIN_COOKIE = "authsvc_login"
FLASH_COOKIE = "authsvc_helpdesk_flash"
#: seconds a status message waits for the page it is meant for
FLASH_MAX_AGE = 120
ACR_HIGH = "http://eidas.europa.eu/LoA/high"
#: events on the audit page (the CSV export takes up to EXPORT_LIMIT)
PAGE_LIMIT = 200
EXPORT_LIMIT = 10000
#: events on a professional's page
RECENT_EVENTS = 20
MAX_QUERY = 100
MAX_FIELD = 200
MAX_NOTE = 500


class ConsoleError(AuthsvcError):
    """An error shown to the agent as a translated text (``key``) in the page's language."""

    def __init__(self, key: str, *, status: int = 400, detail: str = "", field: str = "") -> None:
        super().__init__(detail or key, status=status)
        self.key = key
        self.detail = detail
        #: the form field it is about, to show the message next to it
        self.field = field


@dataclass
class Staff:
    """The agent behind the request, once the access rule let them in."""

    sid: str
    account_id: uuid.UUID
    roles: set[str]
    name: str
    lang: str
    cookie: str
    #: set by an action that queued back-channel logouts: the outbox worker is woken after commit
    notify: bool = False
    #: set by an action: the status message for the page it redirects to
    flash: dict[str, Any] | None = field(default=None)

    @property
    def actor(self) -> str:
        return f"staff:{self.account_id}"


# --- the access rule -----------------------------------------------------------------------------


def _return_path() -> str:
    """Where the browser goes back after signing in: the page asked for (a POST goes back to the
    page its form was on)."""
    if request.method != "GET":
        parts = request.path.split("/")
        if len(parts) >= 4 and parts[2] == "professionals":
            return "/".join(parts[:4])
        return bp.url_prefix or "/helpdesk"
    path = quote(request.path)
    query = request.query_string.decode("ascii", "replace")
    full = f"{path}?{query}" if query else path
    return full if len(full) <= 1000 else path[:1000]


def _sign_in(db: Session, lang: str) -> Response:
    """Start a sign-in for the smartcard only; the login page comes back here afterwards."""
    svc = services()
    started = svc.login.start_for_page(
        db, return_to=_return_path(), required_acr=ACR_HIGH, lang=lang
    )
    response = redirect(f"/login?flow={started.flow.id}", code=303)
    response.set_cookie(
        LOGIN_COOKIE,
        started.binding,
        max_age=900,
        httponly=True,
        secure=svc.settings.is_https,
        samesite="Lax",
        path="/",
    )
    return response


def _staff(db: Session, lang: str) -> Staff | Response:
    svc = services()
    cookie = request.cookies.get(SESSION_COOKIE)
    try:
        session, roles = svc.helpdesk.staff_of_session(db, cookie)
    except Forbidden as exc:
        if exc.status == 401:
            return _sign_in(db, lang)
        return _page("helpdesk_error.html", lang, None, status=403, error_key="helpdesk.forbidden")
    assert cookie is not None
    found = db.execute(
        select(Professional.given_name, Professional.family_name)
        .join(Account, Account.professional_id == Professional.id)
        .where(Account.id == session.account_id)
    ).one_or_none()
    name = f"{found[0]} {found[1]}" if found else str(session.account_id)
    return Staff(
        sid=session.id,
        account_id=session.account_id,
        roles=roles,
        name=name,
        lang=lang,
        cookie=cookie,
    )


def console(view: Callable[..., Response]) -> Callable[..., Response]:
    """A console route: one transaction, the access rule first, then the view.

    An error of the view rolls the transaction back; it is then shown on a page (GET) or, after an
    action on a professional, carried back to the professional's page as a status message.
    """

    @wraps(view)
    def wrapper(**kwargs: Any) -> Response:
        svc = services()
        lang = page_language()
        staff: Staff | None = None
        try:
            with svc.db.transaction() as db:
                found = _staff(db, lang)
                if isinstance(found, Response):
                    return found
                staff = found
                response = view(db, staff, **kwargs)
        except ConsoleError as exc:
            if staff is None:
                raise
            return _failed(staff, exc, kwargs.get("number"))
        except AuthsvcError as exc:
            if staff is None:
                raise
            failure = ConsoleError(
                "helpdesk.error.not_found"
                if isinstance(exc, NotFound)
                else "helpdesk.error.action",
                status=exc.status,
                detail=exc.description,
            )
            return _failed(staff, failure, kwargs.get("number"))
        if staff.notify:
            svc.outbox_worker.notify()
        return response

    return wrapper


def _failed(staff: Staff, exc: ConsoleError, number: str | None) -> Response:
    """An action on a professional that could not be done goes back to their page with the reason;
    anything else is a page with the message."""
    if (
        request.method == "POST"
        and number is not None
        and exc.status < 500
        and exc.key != "helpdesk.error.csrf"
        and matricules.is_valid(number)
    ):
        staff.flash = {"kind": "error", "key": exc.key, "detail": exc.detail, "field": exc.field}
        return _redirect(staff, _professional_path(matricules.compact(number)))
    return _page(
        "helpdesk_error.html",
        staff.lang,
        staff,
        status=exc.status,
        error_key=exc.key,
        error_detail=exc.detail,
        back=_professional_path(matricules.compact(number))
        if number and matricules.is_valid(number)
        else None,
    )


# --- CSRF and status messages --------------------------------------------------------------------


def csrf_token(cookie: str) -> str:
    """The console forms' anti-CSRF token: a keyed hash of the session cookie, for this purpose
    only (a new cookie at sign-in or step-up makes a new token)."""
    return services().hasher.hash(Purpose.FLOW_BINDING, f"helpdesk\n{cookie}")[:32]


def _check_csrf(staff: Staff) -> None:
    token = request.form.get("csrf_token", "")
    if not hmac.compare_digest(token.encode("utf-8", "replace"), csrf_token(staff.cookie).encode()):
        raise ConsoleError("helpdesk.error.csrf", status=403)


def _fernet() -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"authsvc/v1/helpdesk-console-flash"
    ).derive(services().hasher.key(Purpose.KEY_ENCRYPTION))
    return Fernet(base64.urlsafe_b64encode(key))


def _redirect(staff: Staff, path: str) -> Response:
    """POST/redirect/GET, with the action's status message for the page it goes to."""
    response = redirect(path, code=303)
    if staff.flash is not None:
        payload = {"sid": staff.sid, "path": path, **staff.flash}
        sealed = _fernet().encrypt(json.dumps(payload, ensure_ascii=False).encode()).decode()
        response.set_cookie(
            FLASH_COOKIE,
            sealed,
            max_age=FLASH_MAX_AGE,
            httponly=True,
            secure=services().settings.is_https,
            samesite="Strict",
            path="/helpdesk",
        )
    return response


def _take_flash(staff: Staff) -> dict[str, Any] | None:
    """The status message left for this page by the action before, if any (then it is gone)."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(_fernet().decrypt(raw.encode("ascii"), ttl=FLASH_MAX_AGE))
    except (InvalidToken, ValueError, UnicodeEncodeError):
        return None
    if not isinstance(data, dict) or data.get("sid") != staff.sid:
        return None
    if data.get("path") != request.path:
        return None
    return data


# --- rendering -----------------------------------------------------------------------------------


def when(value: str | datetime | None) -> str:
    """``2025-06-01 14:03 UTC``: times on the console are UTC, said so."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def dn_part(dn: str | None, part: str) -> str:
    """One attribute of a certificate's name (``CN``, ``serialNumber``), or "" if absent: the
    holder and issuer of a card, readable (the whole name is in the audit trail)."""
    if not dn:
        return ""
    oid = {"CN": NameOID.COMMON_NAME, "serialNumber": NameOID.SERIAL_NUMBER}[part]
    try:
        attributes = x509.Name.from_rfc4514_string(dn).get_attributes_for_oid(oid)
    except ValueError:
        return ""
    return str(attributes[0].value) if attributes else ""


def describe_data(data: Any) -> str:
    """An audit event's data, readable in a table cell."""
    if not isinstance(data, dict) or not data:
        return ""
    parts = []
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}: {text}")
    out = "; ".join(parts)
    return out if len(out) <= 300 else out[:299] + "…"


def _page(
    template: str, lang: str, staff: Staff | None, *, status: int = 200, **context: Any
) -> Response:
    flash = _take_flash(staff) if staff is not None else None
    html = render_page(
        template,
        lang,
        staff=staff,
        csrf_token=csrf_token(staff.cookie) if staff is not None else "",
        flash=flash,
        when=when,
        dn_part=dn_part,
        describe_data=describe_data,
        **context,
    )
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    if request.cookies.get(FLASH_COOKIE) is not None and staff is not None:
        response.delete_cookie(FLASH_COOKIE, path="/helpdesk", samesite="Strict", httponly=True)
    return response


def _professional_path(number: str) -> str:
    return f"/helpdesk/professionals/{number}"


def _valid_matricule(number: str) -> str:
    try:
        return matricules.validate(number)
    except matricules.InvalidMatricule:
        raise ConsoleError("helpdesk.error.matricule") from None


def _text(value: str, *, limit: int = MAX_FIELD) -> str | None:
    """The i18n key of what is wrong with a typed text, or None."""
    if len(value) > limit:
        return "helpdesk.error.too_long"
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        return "helpdesk.error.control"
    return None


def _names(db: Session, actors: Iterable[str]) -> dict[str, str]:
    """``staff:<id>`` / ``account:<id>`` → "Name (matricule)", for the actors and subjects of the
    events shown on a page."""
    ids: dict[uuid.UUID, list[str]] = {}
    for actor in set(actors):
        kind, _, rest = actor.partition(":")
        if kind in ("staff", "account"):
            try:
                ids.setdefault(uuid.UUID(rest), []).append(actor)
            except ValueError:
                continue
    if not ids:
        return {}
    rows = db.execute(
        select(
            Account.id, Professional.given_name, Professional.family_name, Professional.matricule
        )
        .join(Professional, Professional.id == Account.professional_id)
        .where(Account.id.in_(list(ids)))
    ).all()
    out: dict[str, str] = {}
    for account_id, given, family, number in rows:
        for actor in ids.get(account_id, []):
            out[actor] = f"{given} {family} ({number})"
    return out


# --- finding someone -----------------------------------------------------------------------------


@bp.get("")
@bp.get("/")
@console
def search(db: Session, staff: Staff) -> Response:
    query = request.args.get("q", "")
    error = _text(query, limit=MAX_QUERY)
    results: list[dict[str, Any]] | None = None
    if query.strip() and error is None:
        results = services().helpdesk.search(db, query)
    return _page(
        "helpdesk_search.html",
        staff.lang,
        staff,
        status=400 if error else 200,
        query=query if error is None else query[:MAX_QUERY],
        query_error=error,
        results=results,
    )


@bp.get("/professionals/<number>")
@console
def professional(db: Session, staff: Staff, number: str) -> Response:
    valid = _valid_matricule(number)
    if valid != number:
        return redirect(_professional_path(valid), code=303)
    detail = services().helpdesk.detail(db, valid, viewer=staff.actor)
    client_ids = {c for s in detail["sessions"] for c in s["clients"]}
    clients: dict[str, str] = {}
    if client_ids:
        rows = db.execute(
            select(Client.client_id, Client.name).where(Client.client_id.in_(client_ids))
        )
        clients = {client_id: name for client_id, name in rows}
    events = detail["events"][:RECENT_EVENTS]
    return _page(
        "helpdesk_professional.html",
        staff.lang,
        staff,
        p=detail,
        clients=clients,
        events=events,
        names=_names(db, [e["actor"] for e in events] + [e["subject"] or "" for e in events]),
        reasons=REASONS,
    )


# --- the actions ---------------------------------------------------------------------------------


def _card_id(raw: str | None) -> uuid.UUID | None:
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ConsoleError("helpdesk.error.card") from None


def _revoke_page(
    db: Session, staff: Staff, number: str, *, status: int = 200, reason_error: str | None = None
) -> Response:
    card_id = _card_id(request.values.get("card_id") or request.values.get("card"))
    detail = services().helpdesk.detail(db, number)
    active = [c for c in detail["cards"] if c["status"] == "active"]
    cards = [c for c in active if card_id is None or c["card_id"] == str(card_id)]
    if not cards:
        raise ConsoleError("helpdesk.error.no_active_card", status=404)
    ids = {c["card_id"] for c in cards}
    sessions = [s for s in detail["sessions"] if s["card_id"] in ids]
    return _page(
        "helpdesk_revoke.html",
        staff.lang,
        staff,
        status=status,
        p=detail,
        cards=cards,
        card_id=str(card_id) if card_id else "",
        sessions=sessions,
        reasons=REASONS,
        reason=request.form.get("reason", ""),
        reason_error=reason_error,
    )


@bp.get("/professionals/<number>/revoke-card")
@console
def revoke_confirm(db: Session, staff: Staff, number: str) -> Response:
    return _revoke_page(db, staff, _valid_matricule(number))


@bp.post("/professionals/<number>/revoke-card")
@console
def revoke_card(db: Session, staff: Staff, number: str) -> Response:
    _check_csrf(staff)
    valid = _valid_matricule(number)
    reason = request.form.get("reason", "")
    if reason not in REASONS:
        return _revoke_page(
            db, staff, valid, status=400, reason_error="helpdesk.revoke.reason.error"
        )
    card_id = _card_id(request.form.get("card_id"))
    try:
        result = services().helpdesk.revoke_cards(
            db, valid, reason=reason, actor=staff.actor, card_id=card_id
        )
    except NotFound:
        raise ConsoleError("helpdesk.error.no_active_card", status=409) from None
    staff.notify = True
    staff.flash = {
        "kind": "revoked",
        "reason": reason,
        "cards": [c["serial"] for c in result.revoked],
        "sessions": result.sessions_ended,
        "tokens": result.tokens_revoked,
    }
    return _redirect(staff, _professional_path(valid))


def _note() -> str:
    note = request.form.get("note", "").strip()
    if _text(note.replace("\n", " ").replace("\r", " "), limit=MAX_NOTE) is not None:
        raise ConsoleError("helpdesk.error.note", field=request.path.rsplit("/", 1)[-1] + "-note")
    return note


@bp.post("/professionals/<number>/lock")
@console
def lock(db: Session, staff: Staff, number: str) -> Response:
    _check_csrf(staff)
    valid = _valid_matricule(number)
    note = _note()
    try:
        services().helpdesk.lock(db, valid, actor=staff.actor, note=note)
    except InvalidInput:
        raise ConsoleError("helpdesk.error.lock") from None
    staff.notify = True
    staff.flash = {"kind": "locked"}
    return _redirect(staff, _professional_path(valid))


@bp.post("/professionals/<number>/unlock")
@console
def unlock(db: Session, staff: Staff, number: str) -> Response:
    _check_csrf(staff)
    valid = _valid_matricule(number)
    note = _note()
    try:
        services().helpdesk.unlock(db, valid, actor=staff.actor, note=note)
    except InvalidInput:
        raise ConsoleError("helpdesk.error.unlock") from None
    staff.flash = {"kind": "unlocked"}
    return _redirect(staff, _professional_path(valid))


@bp.post("/professionals/<number>/end-sessions")
@console
def end_sessions(db: Session, staff: Staff, number: str) -> Response:
    _check_csrf(staff)
    valid = _valid_matricule(number)
    ended = services().helpdesk.end_sessions(db, valid, actor=staff.actor)
    staff.notify = True
    staff.flash = {"kind": "sessions_ended", "sessions": ended}
    return _redirect(staff, _professional_path(valid))


@bp.post("/professionals/<number>/letters")
@console
def issue_letter(db: Session, staff: Staff, number: str) -> Response:
    _check_csrf(staff)
    valid = _valid_matricule(number)
    try:
        issued = services().helpdesk.issue_letter(db, valid, actor=staff.actor)
    except InvalidInput:
        raise ConsoleError("helpdesk.error.letter") from None
    # the code is shown once, on the next page, and is stored nowhere (only its keyed hash)
    staff.flash = {
        "kind": "letter",
        "code": issued.activation_code,
        "expires_at": issued.to_dict()["expires_at"],
        "name": issued.name,
    }
    return _redirect(staff, _professional_path(valid))


# --- the audit trail -----------------------------------------------------------------------------


@dataclass
class AuditQuery:
    values: dict[str, str]
    errors: dict[str, str]
    subjects: list[str]
    since: datetime | None = None
    until: datetime | None = None

    @property
    def arguments(self) -> dict[str, Any]:
        return {
            "subjects": self.subjects,
            "tag": self.values["tag"].strip() or None,
            "actor": self.values["actor"].strip() or None,
            "since": self.since,
            "until": self.until,
        }


def _time(raw: str) -> datetime | None:
    """A time from the form (``datetime-local``: no zone, read as UTC) or typed in ISO 8601, in UTC.

    ``ValueError`` for anything else, including a time whose zone takes it out of the years
    1–9999 (``0001-01-01T00:00+01:00``)."""
    value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range in UTC") from None


def _audit_query(db: Session) -> AuditQuery:
    values = {
        name: request.args.get(name, "") for name in ("subject", "tag", "actor", "since", "until")
    }
    query = AuditQuery(values=values, errors={}, subjects=[])
    for name, value in values.items():
        problem = _text(value)
        if problem:
            query.errors[name] = problem
    subject = values["subject"].strip()
    if subject and "subject" not in query.errors:
        compact = matricules.compact(subject)
        if compact.isdigit():
            if not matricules.is_valid(compact):
                query.errors["subject"] = "helpdesk.error.matricule"
            else:
                query.subjects.append(f"professional:{compact}")
                account_id = db.scalar(
                    select(Account.id)
                    .join(Professional, Professional.id == Account.professional_id)
                    .where(Professional.matricule == compact)
                )
                if account_id is not None:
                    query.subjects.append(f"account:{account_id}")
        else:
            query.subjects.append(subject)
    for name in ("since", "until"):
        if values[name].strip() and name not in query.errors:
            try:
                setattr(query, name, _time(values[name]))
            except ValueError:
                query.errors[name] = "helpdesk.audit.time.error"
    if query.since and query.until and query.since >= query.until:
        query.errors["until"] = "helpdesk.audit.until.error"
    return query


@bp.get("/audit")
@console
def audit_trail(db: Session, staff: Staff) -> Response:
    query = _audit_query(db)
    events: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    if not query.errors:
        svc = services()
        events = svc.helpdesk.events_json(
            svc.helpdesk.events(db, **query.arguments, limit=PAGE_LIMIT)
        )
        names = _names(db, [e["actor"] for e in events] + [e["subject"] or "" for e in events])
    export = request.query_string.decode("ascii", "replace")
    return _page(
        "helpdesk_audit.html",
        staff.lang,
        staff,
        status=400 if query.errors else 200,
        values=query.values,
        errors=query.errors,
        events=events,
        names=names,
        limit=PAGE_LIMIT,
        export_limit=EXPORT_LIMIT,
        export_url="/helpdesk/audit.csv" + (f"?{export}" if export else ""),
    )


@bp.get("/audit.csv")
@console
def audit_csv(db: Session, staff: Staff) -> Response:
    query = _audit_query(db)
    if query.errors:
        raise ConsoleError("helpdesk.audit.export.error")
    svc = services()
    events = svc.helpdesk.events(db, **query.arguments, limit=EXPORT_LIMIT)
    svc.helpdesk.exported(db, actor=staff.actor, filters=query.arguments, count=len(events))
    response = Response(svc.helpdesk.events_csv(events), mimetype="text/csv")
    stamp = svc.clock.now().strftime("%Y%m%d-%H%M%S")
    response.headers["Content-Disposition"] = f'attachment; filename="authsvc-audit-{stamp}.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/<path:rest>")
@console
def unknown(db: Session, staff: Staff, rest: str) -> Response:
    return _page(
        "helpdesk_error.html", staff.lang, staff, status=404, error_key="helpdesk.error.page"
    )
