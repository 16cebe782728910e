"""The activation flows API (INTERFACE §4 "Activation") and the activation pages.

The pages are plain HTML with one static script that calls this same API; nothing here does more
than parse the request, call :class:`~authsvc.activation.service.ActivationService`, and answer.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, request, url_for

from ..pki.challenges import Challenge
from ..web import services
from ..web.api import flow_error, json_object, obj, respond, string
from ..web.i18n import negotiate
from ..web.pages import page_language, render_page
from .flows import ActivationFlow
from .service import ActivationError
from .states import State

api = Blueprint("activation_api", __name__, url_prefix="/api/activation")
pages = Blueprint("activation_pages", __name__)

COOKIE = "authsvc_activation"


def iso(value: Any) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")  # type: ignore[no-any-return]


def flow_json(flow: ActivationFlow, challenge: Challenge | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "flow_id": flow.id,
        "state": flow.state,
        "expires_at": iso(flow.expires_at),
        "csrf_token": flow.csrf_token,
    }
    if flow.email:
        body["email"] = flow.email
    if challenge is not None:
        body["challenge"] = challenge.to_dict()
    return body


def binding() -> str | None:
    return request.cookies.get(COOKIE)


api.register_error_handler(ActivationError, flow_error)


@api.post("")
def start() -> Response:
    data = json_object()
    code = string(data, "activation_code", max_length=64)
    number = string(data, "matricule", max_length=32)
    lang = negotiate(
        request.accept_languages, data.get("lang") if isinstance(data.get("lang"), str) else None
    )
    started = services().activation.start(code, number, lang=lang, ip=request.remote_addr)
    flow = started.flow
    response = respond(
        {
            "flow_id": flow.id,
            "csrf_token": flow.csrf_token,
            "state": flow.state,
            "expires_at": iso(flow.expires_at),
        },
        201,
    )
    settings = services().settings
    response.set_cookie(
        COOKIE,
        started.binding,
        max_age=int((flow.expires_at - flow.created_at).total_seconds()),
        httponly=True,
        secure=settings.is_https,
        samesite="Lax",
        path="/",
    )
    response.headers["Location"] = url_for("activation_api.show", flow_id=flow.id)
    return response


@api.get("/<flow_id>")
def show(flow_id: str) -> Response:
    flow, challenge = services().activation.view(flow_id, binding())
    return respond(flow_json(flow, challenge))


@api.post("/<flow_id>/email")
def email(flow_id: str) -> Response:
    data = json_object()
    flow = services().activation.submit_email(
        flow_id, binding(), data.get("csrf_token"), string(data, "email", max_length=320)
    )
    return respond({"state": flow.state})


@api.post("/<flow_id>/email/verify")
def verify(flow_id: str) -> Response:
    data = json_object()
    flow = services().activation.verify_email(
        flow_id, binding(), data.get("csrf_token"), string(data, "code", max_length=32)
    )
    return respond({"state": flow.state})


@api.post("/<flow_id>/password")
def password(flow_id: str) -> Response:
    data = json_object()
    flow, challenge = services().activation.set_password(
        flow_id, binding(), data.get("csrf_token"), string(data, "password", max_length=4096)
    )
    return respond({"state": flow.state, "challenge": challenge.to_dict()})


@api.post("/<flow_id>/smartcard")
def smartcard(flow_id: str) -> Response:
    data = json_object()
    flow, account = services().activation.complete(
        flow_id, binding(), data.get("csrf_token"), obj(data, "auth_token")
    )
    return respond({"state": flow.state, "sub": account.subject})


# --- pages ---------------------------------------------------------------------------------------


@pages.get("/activate")
def start_page() -> str:
    lang = page_language()
    return render_page(
        "activate_start.html",
        lang,
        page_data={"api": url_for("activation_api.start"), "page": "/activate/"},
        error=request.args.get("error")
        if request.args.get("error") in ("flow_not_found", "flow_expired")
        else None,
    )


@pages.get("/activate/<flow_id>")
def flow_page(flow_id: str) -> Response | str:
    try:
        flow, challenge = services().activation.view(flow_id, binding())
    except ActivationError as exc:
        return redirect(url_for("activation_pages.start_page", error=exc.code))  # type: ignore[return-value]
    lang = page_language(flow.lang)
    professional = services().activation.professional(flow)
    return render_page(
        "activate_flow.html",
        lang,
        flow=flow,
        state=State(flow.state),
        name=professional.name,
        matricule=professional.matricule,
        page_data={
            "api": url_for("activation_api.show", flow_id=flow.id),
            "flow": flow_json(flow, challenge),
        },
    )
