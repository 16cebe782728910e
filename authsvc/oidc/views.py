"""The OpenID Connect endpoints (INTERFACE §3).

The authorization endpoint decides, with named checks, whether the browser's session is enough
for this request (node-oidc-provider's "interaction policy" idea): ``no_session``,
``prompt_login``, ``max_age``, ``login_hint``, ``acr``. When one fails the browser is sent to the
sign-in page — or, with ``prompt=none``, the client gets ``login_required`` /
``interaction_required``. The sign-in page sends the browser back here with ``login_flow``, which
tells the checks that the person has just authenticated.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidRequestError
from flask import Blueprint, Response, g, redirect, render_template, request
from markupsafe import Markup
from sqlalchemy.exc import IntegrityError

from .. import matricule as matricules
from ..db import DeferredWrites, StaleRead
from ..web import services
from ..web.i18n import LANGUAGES, NAMES, gettext, negotiate
from .claims import ACR_HIGH, ACR_LOW, ACR_VALUES, released_claims
from .clients import ClientView
from .keys import JWKS_MAX_AGE
from .logout import needs_confirmation
from .server import CODE_USED, FoundCode, Provider
from .tokens import GRANT_OVER

bp = Blueprint("oidc", __name__)

LOGIN_COOKIE = "authsvc_login"
SESSION_COOKIE = "authsvc_session"
DISCOVERY_MAX_AGE = 3600


# --- discovery and keys --------------------------------------------------------------------------


def cached_json(body: bytes, etag: str, max_age: int) -> Response:
    if request.if_none_match.contains_weak(etag.strip('"')) or request.if_none_match.contains(
        etag.strip('"')
    ):
        response = Response(status=304)
    else:
        response = Response(body, mimetype="application/json")
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    provider = services().oidc
    return cached_json(provider.discovery_json, provider.discovery_etag, DISCOVERY_MAX_AGE)


@bp.get("/jwks.json")
def jwks() -> Response:
    body, etag = services().keys.jwks()
    return cached_json(body, etag, JWKS_MAX_AGE)


# --- authorization -------------------------------------------------------------------------------


#: longest ``claims`` parameter read (ours is a few hundred bytes; more is not a request for us)
MAX_CLAIMS_PARAMETER = 4096
#: longest ``nonce`` kept with a code (the column's size)
MAX_NONCE = 500


def required_acr(payload: Any, client: ClientView) -> str:
    """INTERFACE §3 "Levels": a full session when only …/high is asked for, when the ``acr`` claim
    is essential with …/high, or when the client is registered with ``--require-acr high``.

    ``invalid_request`` for a ``claims`` parameter that is not the JSON object of OIDC Core §5.5;
    ``access_denied`` for an essential ``acr`` none of whose values this provider gives (§5.5.1.1:
    an essential claim that cannot be met is a failed authentication)."""
    essential = _essential_acr(payload.data.get("claims"))
    if essential and not set(essential) & set(ACR_VALUES):
        raise AccessDeniedError("None of the essential acr values can be given.")
    if client.require_acr == "high":
        return ACR_HIGH
    values = (payload.data.get("acr_values") or "").split()
    if values and set(values) <= {ACR_HIGH}:
        return ACR_HIGH
    if essential and set(essential) & set(ACR_VALUES) <= {ACR_HIGH}:
        return ACR_HIGH
    return ACR_LOW


def _essential_acr(claims_param: object) -> list[str]:
    """The values of an essential ``acr`` in the ``claims`` parameter (id_token or userinfo)."""
    if not claims_param:
        return []
    if not isinstance(claims_param, str) or len(claims_param) > MAX_CLAIMS_PARAMETER:
        raise InvalidRequestError("The 'claims' parameter is too long.")
    try:
        claims = json.loads(claims_param)
    except (ValueError, RecursionError):
        raise InvalidRequestError("The 'claims' parameter is not JSON.") from None
    if not isinstance(claims, dict):
        raise InvalidRequestError("The 'claims' parameter is not a JSON object.")
    wanted: list[str] = []
    for target in ("id_token", "userinfo"):
        member = claims.get(target)
        if member is None:
            continue
        if not isinstance(member, dict):
            raise InvalidRequestError(f"'claims.{target}' is not a JSON object.")
        acr = member.get("acr")
        if acr is not None and not isinstance(acr, dict):
            raise InvalidRequestError(f"'claims.{target}.acr' is not null or an object.")
        if not acr or acr.get("essential") is not True:
            continue
        values = acr.get("values", [acr["value"]] if "value" in acr else [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidRequestError(f"'claims.{target}.acr' values are not strings.")
        wanted.extend(values)
    return wanted


def error_redirect(redirect_uri: str, error: str, description: str, state: str | None) -> Response:
    params = {"error": error, "error_description": description}
    if state:
        params["state"] = state
    params["iss"] = services().settings.issuer  # RFC 9207, error responses too
    separator = "&" if "?" in redirect_uri else "?"
    return redirect(f"{redirect_uri}{separator}{urlencode(params)}")  # type: ignore[return-value]


def error_page(error: OAuth2Error, status: int = 400) -> Response:
    """An error that must not go back to the client (its redirect URI is not known to be its own):
    a page for the person, never a redirect (RFC 9700 §4.11)."""
    lang = negotiate(request.accept_languages, request.args.get("ui_locales", "").split(" ")[0])
    html = render_template(
        "oidc_error.html",
        lang=lang,
        t=lambda key, **values: gettext(lang, key, **values),
        languages=[(code, NAMES[code]) for code in LANGUAGES],
        page_data=Markup("{}"),
        error=error.error,
        description=error.description or "",
    )
    response = Response(html, status=status, mimetype="text/html")
    return response


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    svc = services()
    svc.keys.ready()
    provider = svc.oidc
    now = svc.clock.now()
    with svc.db.transaction() as db:
        g.oidc_db = db
        try:
            grant = provider.server.get_consent_grant(end_user=None)
        except OAuth2Error as exc:
            if exc.redirect_uri:
                return error_redirect(
                    exc.redirect_uri, exc.error, exc.description or exc.error, exc.state
                )
            return error_page(exc)
        payload = grant.request.payload
        client: ClientView = grant.client
        redirect_uri = grant.redirect_uri
        state = payload.state
        # request objects are not supported (discovery says so): refused, not ignored (§6.1)
        for name, error in (
            ("request", "request_not_supported"),
            ("request_uri", "request_uri_not_supported"),
        ):
            if payload.data.get(name):
                return error_redirect(redirect_uri, error, f"'{name}' is not supported.", state)
        nonce = payload.data.get("nonce")
        if nonce is not None and len(nonce) > MAX_NONCE:
            return error_redirect(redirect_uri, "invalid_request", "'nonce' is too long.", state)
        try:
            level = required_acr(payload, client)
        except OAuth2Error as exc:
            return error_redirect(redirect_uri, exc.error, exc.description, state)
        prompts = (payload.data.get("prompt") or "").split()
        if "none" in prompts and len(prompts) > 1:
            return error_redirect(redirect_uri, "invalid_request", "Invalid 'prompt'.", state)
        hint = (payload.data.get("login_hint") or "").replace(" ", "") or None
        if hint is not None and not matricules.is_valid(hint):
            hint = None  # only a hint: one that is not a matricule is not used

        session = svc.sessions.find(db, request.cookies.get(SESSION_COOKIE))
        just_authenticated = False
        flow_id = request.args.get("login_flow")
        if flow_id:
            account_id = svc.login.complete(
                db, flow_id, request.cookies.get(LOGIN_COOKIE), client.client_id
            )
            just_authenticated = (
                account_id is not None and session is not None and session.account_id == account_id
            )

        # the interaction policy: which check, if any, sends the person to the sign-in page
        failed: str | None = None
        if session is None:
            failed = "no_session"
        elif "login" in prompts and not just_authenticated:
            failed = "prompt_login"
        elif (max_age := payload.data.get("max_age")) is not None and not just_authenticated:
            try:
                limit = int(max_age)
            except ValueError:
                return error_redirect(redirect_uri, "invalid_request", "Invalid 'max_age'.", state)
            if (now - session.auth_time).total_seconds() > limit:
                failed = "max_age"
        if failed is None and session is not None and hint:
            matricule = svc.accounts.matricule_of(db, session.account_id)
            if matricule != hint:
                failed = "login_hint"
        if failed is None and session is not None and level == ACR_HIGH:
            from ..sessions.service import acr_of

            if acr_of(session, now) != ACR_HIGH:
                failed = "acr"

        if failed is not None:
            if "none" in prompts:
                error = "interaction_required" if failed == "acr" else "login_required"
                description = {
                    "no_session": "The person is not signed in.",
                    "max_age": "The person signed in too long ago (max_age).",
                    "login_hint": "Another person is signed in.",
                    "acr": "This service needs a full session (smartcard).",
                }.get(failed, "The person must sign in.")
                return error_redirect(redirect_uri, error, description, state)
            params = {k: v for k, v in request.args.items() if k != "login_flow"}
            if request.method == "POST":
                params = {k: v for k, v in request.form.items() if k != "login_flow"}
            lang = negotiate(
                request.accept_languages,
                (payload.data.get("ui_locales") or "").split(" ")[0] or None,
            )
            started = svc.login.start(
                db,
                client_id=client.client_id,
                request=params,
                required_acr=level,
                login_hint=hint,
                lang=lang,
            )
            response = redirect(f"/login?flow={started.flow.id}")
            response.set_cookie(
                LOGIN_COOKIE,
                started.binding,
                max_age=900,
                httponly=True,
                secure=svc.settings.is_https,
                samesite="Lax",
                path="/",
            )
            return response  # type: ignore[return-value]

        assert session is not None
        grantee = provider.grantee(db, session.account_id, session.id)
        if grantee is None:
            return error_redirect(redirect_uri, "login_required", "The session ended.", state)
        svc.sessions.add_client(db, session, client.client_id)
        response = provider.server.create_authorization_response(grant=grant, grant_user=grantee)
        response.headers["Cache-Control"] = "no-store"
        return response  # type: ignore[no-any-return]


# --- token, userinfo, revocation, introspection --------------------------------------------------


def _endpoint(run: Any, *, read_only: bool = False, defer_writes: bool = False) -> Response:
    """Run an Authlib endpoint in one unit of work: a write transaction, or with ``read_only`` a
    read-only one (on SQLite no ``BEGIN IMMEDIATE``: it waits for no writer).

    With ``defer_writes``, the endpoint runs in a read-only transaction (the client comes from
    :meth:`Provider.cached_client`) and records its writes (:class:`~authsvc.db.DeferredWrites`),
    which are then made in a short write transaction whose guards re-check what was read,
    together with those of the process's other requests (:class:`~authsvc.db.GroupCommit`); the
    response goes out only once that has committed. For requests that only insert (a
    client_credentials grant, a code exchange): the write lock is held for the writes only.
    """
    svc = services()
    svc.keys.ready()
    refused = _client_authentication_problem()
    if refused is not None:
        response = refused
    elif defer_writes:
        response = _deferred(svc.oidc, run)
    else:
        # a read-only endpoint (introspection) needs no snapshot: each statement reads what is
        # committed as it runs, so a revocation is seen the moment it is committed
        unit = svc.db.read_transaction(snapshot=False) if read_only else svc.db.transaction()
        try:
            with unit as db:
                g.oidc_db = db
                response = run(svc.oidc.server)
            g.pop("oidc_code", None)  # burned in the transaction just committed
        except StaleRead as exc:  # rolled back
            code: FoundCode | None = g.pop("oidc_code", None)
            response = _stale(svc.oidc, exc, code)
            if code is not None:
                svc.oidc.burn_code(code)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _deferred(provider: Provider, run: Any) -> Response:
    """An endpoint request whose writes are deferred (:func:`_endpoint`), then committed."""
    code: FoundCode | None
    writes = DeferredWrites()
    g.oidc_writes = writes
    try:
        with services().db.read_transaction() as reading:
            g.oidc_db = reading
            response = run(provider.server)
    finally:
        g.pop("oidc_writes", None)
        g.pop("oidc_db", None)
        code = g.pop("oidc_code", None)  # a code exchange's code, found
    committed = False
    if writes and response.status_code == 200:
        try:
            provider.commits.commit(writes)
            committed = True
        except StaleRead as exc:
            response = _stale(provider, exc, code)
        except IntegrityError:  # the client (or the account) was deleted meanwhile
            response = _client_changed(provider)
    if code is not None and not committed:
        provider.burn_code(code)
    return response


def _stale(provider: Provider, exc: StaleRead, code: FoundCode | None) -> Response:
    """The answer to a request whose guarded writes found that what it read has changed."""
    if code is not None and exc.guard == CODE_USED:
        provider.code_replayed(code)
        return _oauth_error(400, "invalid_grant", "Invalid 'code' in request.")
    if code is not None and exc.guard == GRANT_OVER and not provider.client_changed(code):
        return _oauth_error(400, "invalid_grant", "The session of this code is over.")
    return _client_changed(provider)


def _client_changed(provider: Provider) -> Response:
    """The client was disabled, deleted or given a new secret while its request was served:
    nothing was issued (the transaction rolled back), and the next requests read clients afresh."""
    provider.forget_clients()
    response = _oauth_error(401, "invalid_client", "The client is no longer valid.")
    response.headers["WWW-Authenticate"] = 'Basic realm="authsvc"'
    return response


def _client_authentication_problem() -> Response | None:
    """What Authlib does not check before authenticating a client at the token, revocation and
    introspection endpoints: one method only (RFC 6749 §2.3), and Basic credentials that are
    UTF-8 (RFC 7617 §2.1; Authlib would fail on them)."""
    header = request.headers.get("Authorization", "")
    basic = header[:6].lower() == "basic "
    methods = basic + ("client_secret" in request.form) + ("client_assertion" in request.form)
    if methods > 1:
        return _oauth_error(
            400, "invalid_request", "Use one client authentication method per request."
        )
    if basic:
        try:
            base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            response = _oauth_error(401, "invalid_client", "The Basic credentials are malformed.")
            response.headers["WWW-Authenticate"] = 'Basic realm="authsvc"'
            return response
    return None


def _oauth_error(status: int, error: str, description: str) -> Response:
    body = json.dumps({"error": error, "error_description": description})
    return Response(body, status=status, mimetype="application/json")


@bp.post("/token")
def token() -> Response:
    # A client_credentials grant reads the client, then only inserts: its writes are deferred. So
    # are a code exchange's (it reads, burns the code, inserts) where the database has a single
    # writer (SQLite): held through the whole exchange, its write lock serialised every exchange
    # of every worker; on PostgreSQL, row locks, one transaction costs less than a read and a
    # write one. A client assertion is recorded as used while authenticating, which needs the
    # write transaction; a refresh locks its token.
    form = request.form
    grant = form.get("grant_type")
    return _endpoint(
        lambda server: server.create_token_response(),
        defer_writes="client_assertion" not in form
        and (
            grant == "client_credentials"
            or (grant == "authorization_code" and services().db.single_writer)
        ),
    )


@bp.post("/revoke")
def revoke() -> Response:
    return _endpoint(lambda server: server.create_endpoint_response("revocation"))


@bp.post("/introspect")
def introspect() -> Response:
    # Introspection only reads; a client assertion (private_key_jwt) records its jti, single-use
    # across instances: that needs the write transaction. Without one, the client comes from the
    # per-process cache and is re-checked in the token's own query (server._query_token).
    read_only = "client_assertion" not in request.form
    g.oidc_cached_client = read_only
    try:
        return _endpoint(
            lambda server: server.create_endpoint_response("introspection"), read_only=read_only
        )
    finally:
        g.pop("oidc_cached_client", None)


def bearer_error(error: str, description: str, status: int = 401) -> Response:
    response = Response(
        json.dumps({"error": error, "error_description": description}),
        status=status,
        mimetype="application/json",
    )
    response.headers["WWW-Authenticate"] = (
        f'Bearer error="{error}", error_description="{description}"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    svc = services()
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    if (
        token is None
        and request.method == "POST"
        and request.mimetype == "application/x-www-form-urlencoded"
    ):
        token = request.form.get("access_token")
    if not token:
        response = bearer_error("invalid_request", "An access token is needed.")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    svc.keys.ready()
    with svc.db.read_connection(snapshot=False) as db:  # one statement, no ORM object
        active = svc.tokens.active_access_for_person(db, token)
    if active is None:
        return bearer_error("invalid_token", "The access token is not valid.")
    claims, family, person = active
    if family.account_id is None or "openid" not in str(claims.get("scope", "")).split():
        return bearer_error("insufficient_scope", "The token does not carry openid.", 403)
    if person is None:
        return bearer_error("invalid_token", "The account is not active.")
    body = {"sub": claims["sub"], **released_claims(person, str(claims["scope"]))}
    response = Response(json.dumps(body), mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


# --- logout --------------------------------------------------------------------------------------


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Response:
    """RP-initiated logout. With a valid ``id_token_hint`` and a registered
    ``post_logout_redirect_uri`` it ends the session and redirects without asking; otherwise the
    person confirms (a logout request alone could be forged by any page)."""
    svc = services()
    svc.keys.ready()
    lang = negotiate(
        request.accept_languages, (request.values.get("ui_locales") or "").split(" ")[0] or None
    )
    with svc.db.transaction() as db:
        g.oidc_db = db
        try:
            validated = svc.oidc.server.validate_endpoint_request("end_session")
        except OAuth2Error as exc:
            return error_page(exc)
        confirmed = request.method == "POST" and svc.logout_csrf_ok(
            request.form.get("csrf_token"), request.cookies.get(SESSION_COOKIE)
        )
        own = svc.sessions.find(db, request.cookies.get(SESSION_COOKIE), touch=False)
        if needs_confirmation(validated, own.id if own else None) and not confirmed:
            from ..web.pages import render_page

            html = render_page(
                "logout_confirm.html",
                lang,
                csrf_token=svc.logout_csrf(request.cookies.get(SESSION_COOKIE)),
                client_name=validated.client.name if validated.client is not None else None,
                hidden={
                    k: v
                    for k, v in request.values.items()
                    if k in ("client_id", "post_logout_redirect_uri", "state", "ui_locales")
                },
            )
            return Response(html, mimetype="text/html")
        response = svc.oidc.server.create_endpoint_response("end_session", validated)
    if response is None:
        from ..web.pages import render_page

        response = Response(render_page("logged_out.html", lang), mimetype="text/html")
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.headers["Cache-Control"] = "no-store"
    return response  # type: ignore[no-any-return]
