"""The sign-in API (INTERFACE §4 "Sign-in") and the sign-in page that uses it."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from ..web import services
from ..web.api import flow_error, json_object, obj, respond, string
from ..web.pages import page_language, render_page
from .service import LoginError, SignedIn

api = Blueprint("login_api", __name__, url_prefix="/api/login")
pages = Blueprint("login_pages", __name__)

LOGIN_COOKIE = "authsvc_login"
SESSION_COOKIE = "authsvc_session"


def binding() -> str | None:
    return request.cookies.get(LOGIN_COOKIE)


api.register_error_handler(LoginError, flow_error)


def flow_json(flow_id: str) -> dict[str, Any]:
    svc = services()
    with svc.db.transaction() as db:
        flow = svc.login.load(db, flow_id, binding())
        body: dict[str, Any] = {
            "flow_id": flow.id,
            "csrf_token": flow.csrf_token,
            "required_acr": flow.required_acr,
            "methods": svc.login.methods(flow),
            "login_hint": flow.login_hint,
            "lang": flow.lang,
        }
    body["challenge"] = svc.login.challenge(flow_id).to_dict()
    return body


@api.get("/<flow_id>")
def show(flow_id: str) -> Response:
    body = flow_json(flow_id)
    body.pop("lang")
    if body["login_hint"] is None:
        body.pop("login_hint")
    return respond(body)


def signed_in(result: SignedIn) -> Response:
    response = respond({"redirect_to": result.redirect_to})
    svc = services()
    response.set_cookie(
        SESSION_COOKIE,
        result.opened.cookie,
        max_age=svc.settings.session_max_age,
        httponly=True,
        secure=svc.settings.is_https,
        samesite="Lax",
        path="/",
    )
    return response


@api.post("/<flow_id>/password")
def password(flow_id: str) -> Response:
    data = json_object()
    result = services().login.password(
        flow_id,
        binding(),
        data.get("csrf_token"),
        string(data, "matricule", max_length=64),
        string(data, "password", max_length=4096),
        previous_cookie=request.cookies.get(SESSION_COOKIE),
        ip=request.remote_addr,
        user_agent=request.user_agent.string,
    )
    return signed_in(result)


@api.post("/<flow_id>/smartcard")
def smartcard(flow_id: str) -> Response:
    data = json_object()
    result = services().login.smartcard(
        flow_id,
        binding(),
        data.get("csrf_token"),
        obj(data, "auth_token"),
        previous_cookie=request.cookies.get(SESSION_COOKIE),
        ip=request.remote_addr,
        user_agent=request.user_agent.string,
    )
    return signed_in(result)


@pages.get("/login")
def login_page() -> Response | str:
    flow_id = request.args.get("flow", "")
    try:
        data = flow_json(flow_id)
    except LoginError as exc:
        lang = page_language()
        return Response(render_page("login_error.html", lang, error=exc.code), status=exc.status)
    lang = page_language(data["lang"])
    return render_page(
        "login.html",
        lang,
        methods=data["methods"],
        login_hint=data["login_hint"] or "",
        page_data={"api": f"/api/login/{flow_id}", "flow": data},
    )
