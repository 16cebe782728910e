"""The account API (``/api/account/…``) and the account page (``/account``) that uses it.

Every request is the browser's own: it is recognised by its provider session cookie. A request
without a live session is ``401 login_required``; a state-changing one also needs
``Content-Type: application/json`` and the session's ``csrf_token`` in the body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, request

from ..errors import InvalidInput
from ..oidc.claims import ACR_HIGH
from ..web import services
from ..web.api import flow_error, json_object, respond, string
from ..web.i18n import negotiate
from ..web.pages import page_language, render_page
from .service import AccountError, AccountService, Overview, SessionInfo

api = Blueprint("account_api", __name__, url_prefix="/api/account")
pages = Blueprint("account_pages", __name__)

SESSION_COOKIE = "authsvc_session"
#: passwords are at most 1024 characters (the policy); a little more is read, to say so
MAX_PASSWORD = 4096


def account_service() -> AccountService:
    return AccountService(services())


def cookie() -> str | None:
    return request.cookies.get(SESSION_COOKIE)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def level(acr: str) -> str:
    return "full" if acr == ACR_HIGH else "limited"


api.register_error_handler(AccountError, flow_error)


def text_field(data: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    """A string field that can be hashed: UTF-8-encodable (no lone surrogates from ``\\ud800``)."""
    if optional and data.get(name) in (None, ""):
        return None
    value = string(data, name, max_length=MAX_PASSWORD)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"The field {name!r} is not valid Unicode text.") from None
    return value


def overview_json(who: Overview, csrf_token: str) -> dict[str, Any]:
    return {
        "sub": who.subject,
        "name": who.name,
        "given_name": who.given_name,
        "family_name": who.family_name,
        "matricule": who.matricule,
        "profession": who.profession,
        "email": who.email,
        "session": {
            "sid": who.sid,
            "acr": who.acr,
            "level": level(who.acr),
            "amr": who.amr,
            "auth_time": iso(who.auth_time),
            "full_until": iso(who.full_until) if who.full else None,
            "expires_at": iso(who.expires_at),
        },
        "password_change": {"current_password_required": not who.full},
        "csrf_token": csrf_token,
    }


def session_json(info: SessionInfo) -> dict[str, Any]:
    return {
        "sid": info.sid,
        "current": info.current,
        "created_at": iso(info.created_at),
        "last_seen_at": iso(info.last_seen_at),
        "expires_at": iso(info.expires_at),
        "acr": info.acr,
        "level": level(info.acr),
        "amr": info.amr,
        "methods": info.methods,
        "user_agent": info.user_agent,
        "ip": info.ip,
        "services": [
            {"client_id": s.client_id, "name": s.name, "first_at": iso(s.first_at)}
            for s in info.services
        ],
    }


@api.get("")
def show() -> Response:
    svc = account_service()
    return respond(overview_json(svc.overview(cookie()), svc.csrf_token(cookie())))


@api.get("/sessions")
def sessions() -> Response:
    return respond({"sessions": [session_json(s) for s in account_service().sessions(cookie())]})


# merge_slashes=False: "…/x//end" is not an id, and gets a 404 rather than Werkzeug's 308 redirect
@api.post("/sessions/<sid>/end", merge_slashes=False)
def end_session(sid: str) -> Response:
    data = json_object()
    ended = account_service().end_session(cookie(), data.get("csrf_token"), sid)
    response = respond({"sid": ended.sid, "ended": True, "signed_out": ended.signed_out})
    if ended.signed_out:
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@api.post("/password")
def password() -> Response:
    data = json_object()
    current = text_field(data, "current_password", optional=True)
    new = text_field(data, "new_password")
    assert new is not None
    changed = account_service().change_password(
        cookie(),
        data.get("csrf_token"),
        current_password=current,
        new_password=new,
        ip=request.remote_addr,
        lang=negotiate(
            request.accept_languages,
            data.get("lang") if isinstance(data.get("lang"), str) else None,
        ),
    )
    return respond({"changed": True, "sessions_ended": changed.sessions_ended})


# --- the page ------------------------------------------------------------------------------------


@pages.get("/account")
def account_page() -> str:
    lang = page_language()
    svc = account_service()
    try:
        who = svc.overview(cookie())
    except AccountError:
        return render_page("account.html", lang, who=None, page_data={"signed_in": False})
    return render_page(
        "account.html",
        lang,
        who=who,
        page_data={
            "signed_in": True,
            "api": "/api/account",
            "account": overview_json(who, svc.csrf_token(cookie())),
        },
    )
