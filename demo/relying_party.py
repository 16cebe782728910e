"""The demo relying service: a stand-in for the shared care record (DSP) that signs people in
with authsvc through OpenID Connect, using Authlib's Flask OAuth client.

What it shows a relying service doing (docs/relying-party.md explains each step):

- the authorization code flow with PKCE (S256), ``state`` and ``nonce``, as a confidential client
  (``client_secret_basic``), configured from the provider's discovery document; the ID token is
  verified (signature from the provider's JWKS, ``iss``, ``aud``, ``exp``, ``nonce``) and so is
  the ``iss`` of the authorization response (RFC 9207);
- levels: the home page is enough with a limited session (password); "Patient records" needs a
  full one (smartcard) and steps the person up with ``acr_values=…/LoA/high``;
- a resource server: the records come from ``/api/records``, which accepts an RFC 9068 access
  token (``typ: at+jwt``, signature, ``iss``, ``aud``, ``exp``, ``acr``); the page calls it with
  the session's access token, refreshed (and rotated) by Authlib when it has expired;
- logout: "Sign out" is RP-initiated logout (``id_token_hint``, ``post_logout_redirect_uri``,
  ``state``); ``/backchannel-logout`` verifies the provider's logout token and ends the local
  sessions of that provider session (``sid``).

Sessions are kept server-side, in memory, keyed by a random id in the (signed) cookie, so that a
back-channel logout can end them. Development only: run with ``python demo/relying_party.py``.

Configuration (environment):

| variable | meaning | default |
| --- | --- | --- |
| ``DEMO_RP_ISSUER`` | the provider's issuer URL | ``http://127.0.0.1:5000`` |
| ``DEMO_RP_CLIENT_ID``, ``DEMO_RP_CLIENT_SECRET`` | the registration (``authsvc clients create``) | required |
| ``DEMO_RP_BASE_URL`` | this service's own URL (redirect URIs are derived from it) | ``http://127.0.0.1:5090`` |
| ``DEMO_RP_HOST``, ``DEMO_RP_PORT`` | where it listens | ``127.0.0.1``, the base URL's port |
| ``DEMO_RP_SECRET_KEY`` | the cookie signing key | random at each start |
| ``DEMO_RP_FULL_LEVEL_MAX_AGE`` | seconds a full level, once seen, is trusted here | ``28800`` |
"""

from __future__ import annotations

import hmac
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from authlib.oauth2 import OAuth2Error
from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request, session
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

try:  # Authlib's Flask client speaks HTTP through requests
    from requests import RequestException
except ImportError:  # pragma: no cover - Authlib's import above already needs it
    RequestException = OSError  # type: ignore[assignment,misc]

HERE = Path(__file__).resolve().parent

ACR_LOW = "http://eidas.europa.eu/LoA/low"
ACR_HIGH = "http://eidas.europa.eu/LoA/high"
LEVELS = {ACR_LOW: "limited", ACR_HIGH: "full"}
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
SCOPE = "openid profile email professional"
#: the algorithms the provider signs with (its discovery says so too)
ALGORITHMS = ["ES256", "RS256"]
#: clock skew tolerated on the provider's timestamps
LEEWAY = 60
#: a logout token older than this is refused (the provider signs it when it delivers it)
LOGOUT_TOKEN_MAX_AGE = 600
HTTP_TIMEOUT = 10
#: seconds between two fetches of the provider's JWKS forced by an unknown key id
JWKS_REFETCH_INTERVAL = 10


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Config:
    issuer: str
    client_id: str
    client_secret: str
    base_url: str
    host: str
    port: int
    secret_key: str
    full_level_max_age: int

    @property
    def redirect_uri(self) -> str:
        return f"{self.base_url}/callback"

    @property
    def post_logout_redirect_uri(self) -> str:
        return f"{self.base_url}/"

    @property
    def backchannel_logout_uri(self) -> str:
        return f"{self.base_url}/backchannel-logout"

    @property
    def issuer_origin(self) -> str:
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        env = dict(os.environ if env is None else env)

        def get(name: str, default: str | None = None) -> str:
            value = env.get(f"DEMO_RP_{name}", "").strip() or default
            if value is None:
                raise ConfigError(f"DEMO_RP_{name} is not set")
            return value

        def url(name: str, default: str) -> str:
            value = get(name, default).rstrip("/")
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
                raise ConfigError(f"DEMO_RP_{name}: not a URL like http://host:port: {value!r}")
            return value

        base_url = url("BASE_URL", "http://127.0.0.1:5090")
        parts = urlsplit(base_url)
        default_port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            port = int(get("PORT", str(default_port)))
            full = int(get("FULL_LEVEL_MAX_AGE", "28800"))
        except ValueError as exc:
            raise ConfigError(f"DEMO_RP_PORT / DEMO_RP_FULL_LEVEL_MAX_AGE: {exc}") from None
        return cls(
            issuer=url("ISSUER", "http://127.0.0.1:5000"),
            client_id=get("CLIENT_ID"),
            client_secret=get("CLIENT_SECRET"),
            base_url=base_url,
            host=get("HOST", "127.0.0.1"),
            port=port,
            secret_key=get("SECRET_KEY", secrets.token_urlsafe(32)),
            full_level_max_age=full,
        )


# --- local sessions ------------------------------------------------------------------------------


@dataclass
class LocalSession:
    """What this service keeps for a signed-in person: the ID token (for logout), its claims, and
    the tokens for the records API."""

    claims: dict[str, Any]
    id_token: str
    token: dict[str, Any]
    created_at: float = field(default_factory=time.time)

    @property
    def sid(self) -> str | None:
        return self.claims.get("sid")

    @property
    def sub(self) -> str:
        return str(self.claims["sub"])

    def is_full(self, max_age: int) -> bool:
        """Full while the card was presented recently enough (as the provider's own rule)."""
        auth_time = self.claims.get("auth_time")
        return (
            self.claims.get("acr") == ACR_HIGH
            and isinstance(auth_time, int)
            and time.time() < auth_time + max_age
        )


class SessionStore:
    """Local sessions by random key, and what the back-channel told us. In memory (one process,
    development only); a real service keeps them where all its instances see them."""

    MAX_REMEMBERED = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, LocalSession] = {}
        self._ended: dict[str, float] = {}  # provider sid → when its back-channel logout came
        self._jtis: dict[str, float] = {}  # logout tokens seen → their expiry

    def add(self, local: LocalSession) -> str:
        key = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[key] = local
        return key

    def get(self, key: str | None) -> LocalSession | None:
        if not key:
            return None
        with self._lock:
            return self._sessions.get(key)

    def drop(self, key: str | None) -> None:
        with self._lock:
            self._sessions.pop(key or "", None)

    def end_provider_session(self, sid: str | None, sub: str | None) -> int:
        """A back-channel logout: end every local session of that provider session (``sid``), or
        of that person (``sub``) when the token names no session."""
        with self._lock:
            doomed = [
                key
                for key, local in self._sessions.items()
                if (local.sid == sid if sid else local.sub == sub)
            ]
            for key in doomed:
                del self._sessions[key]
            if sid:
                self._ended[sid] = time.time()
                self._trim(self._ended)
            return len(doomed)

    def rotate(self, old_refresh_token: str | None, token: dict[str, Any]) -> None:
        with self._lock:
            for local in self._sessions.values():
                if old_refresh_token and local.token.get("refresh_token") == old_refresh_token:
                    local.token = dict(token)

    def ended_at(self, sid: str | None) -> float | None:
        with self._lock:
            return self._ended.get(sid or "")

    def first_use(self, jti: str, exp: float) -> bool:
        """False when this logout token was seen before (a replay)."""
        now = time.time()
        with self._lock:
            for old in [j for j, e in self._jtis.items() if e < now - LEEWAY]:
                del self._jtis[old]
            if jti in self._jtis:
                return False
            self._jtis[jti] = exp
            self._trim(self._jtis)
            return True

    def _trim(self, table: dict[str, float]) -> None:
        while len(table) > self.MAX_REMEMBERED:
            del table[next(iter(table))]


class TokenRefused(Exception):
    """A logout token or access token that fails verification; the message says why."""


# --- the application -----------------------------------------------------------------------------


def create_app(config: Config) -> Flask:
    app = Flask(
        __name__, template_folder=str(HERE / "templates"), static_folder=str(HERE / "static")
    )
    app.config.update(
        SECRET_KEY=config.secret_key,
        # not "session": the provider may run on the same host, and cookies ignore ports
        SESSION_COOKIE_NAME="dsp_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",  # sent on the provider's redirect back (a top-level GET)
        SESSION_COOKIE_SECURE=config.base_url.startswith("https:"),
    )
    store = SessionStore()
    app.extensions["demo_rp"] = store

    oauth = OAuth(app)
    oauth.register(
        "authsvc",
        client_id=config.client_id,
        client_secret=config.client_secret,
        server_metadata_url=f"{config.issuer}/.well-known/openid-configuration",
        client_kwargs={
            "scope": SCOPE,
            "code_challenge_method": "S256",  # PKCE: Authlib makes and keeps the verifier
            "token_endpoint_auth_method": "client_secret_basic",
            "default_timeout": HTTP_TIMEOUT,
        },
        # a refresh rotates the refresh token: keep the new pair in place of the old one
        update_token=lambda token, refresh_token=None, access_token=None: store.rotate(
            refresh_token, token
        ),
    )
    provider = oauth.authsvc

    # --- helpers ---

    def current() -> LocalSession | None:
        if "local" not in g:
            g.local = store.get(session.get("key"))
        return g.local  # type: ignore[no-any-return]

    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(24)
        return str(session["csrf"])

    def check_csrf() -> None:
        sent = request.form.get("csrf_token", "")
        expected = str(session.get("csrf", ""))
        if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
            abort(400, "The form is out of date: go back, reload the page and try again.")

    def start_sign_in(next_path: str, *, full: bool) -> Response:
        session["next"] = next_path
        extra: dict[str, str] = {}
        if full:
            extra["acr_values"] = ACR_HIGH  # step-up: the provider asks for the card only
        session["wanted_acr"] = ACR_HIGH if full else None
        return provider.authorize_redirect(config.redirect_uri, **extra)  # type: ignore[no-any-return]

    last_refetch = [0.0]

    def keys(*, refresh: bool = False) -> KeySet:
        # an unknown kid may be a rotation (fetch again) or garbage (do not let every bad token
        # make us call the provider): at most one forced fetch every JWKS_REFETCH_INTERVAL
        if refresh and time.monotonic() - last_refetch[0] >= JWKS_REFETCH_INTERVAL:
            last_refetch[0] = time.monotonic()
            return KeySet.import_key_set(provider.fetch_jwk_set(force=True))
        return KeySet.import_key_set(provider.fetch_jwk_set())

    def decode(token: str) -> Any:
        """Verify a JWT's signature with the provider's published keys (refetched once when the
        key id is unknown: the provider has rotated its keys)."""
        if not token or len(token) > 16_384 or token.count(".") != 2:
            raise TokenRefused("not a signed JWT")
        try:
            try:
                return jwt.decode(token, keys(), algorithms=ALGORITHMS)
            except InvalidKeyIdError:
                return jwt.decode(token, keys(refresh=True), algorithms=ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise TokenRefused(f"signature or format: {exc.__class__.__name__}") from None

    def verify_logout_token(token: str) -> dict[str, Any]:
        """OpenID Connect Back-Channel Logout 1.0 §2.6."""
        decoded = decode(token)
        if decoded.header.get("typ") != "logout+jwt":
            raise TokenRefused("typ is not logout+jwt")
        claims: dict[str, Any] = dict(decoded.claims)
        try:
            JWTClaimsRegistry(
                leeway=LEEWAY,
                iss={"essential": True, "value": config.issuer},
                aud={"essential": True, "value": config.client_id},
                iat={"essential": True},
                jti={"essential": True},
            ).validate(claims)
        except JoseError as exc:
            raise TokenRefused(f"claims: {exc}") from None
        if claims["iat"] < time.time() - LOGOUT_TOKEN_MAX_AGE:
            raise TokenRefused("issued too long ago")
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
            raise TokenRefused("no back-channel logout event")
        if "nonce" in claims:
            raise TokenRefused("a logout token carries no nonce")
        sid, sub = claims.get("sid"), claims.get("sub")
        if not (isinstance(sid, str) and sid) and not (isinstance(sub, str) and sub):
            raise TokenRefused("neither sid nor sub")
        if not store.first_use(claims["jti"], claims.get("exp") or time.time() + 600):
            raise TokenRefused("replayed")
        return claims

    def verify_access_token(token: str) -> dict[str, Any]:
        """A resource server's check of an RFC 9068 access token, locally: the signature, the
        type, the issuer, the audience (the provider's issuer URL) and the expiry. A revoked token
        stays valid here until it expires (≤ 300 s): ask the introspection endpoint instead when
        revocation must count at once."""
        decoded = decode(token)
        if decoded.header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
            raise TokenRefused("typ is not at+jwt")
        claims: dict[str, Any] = dict(decoded.claims)
        try:
            JWTClaimsRegistry(
                leeway=LEEWAY,
                iss={"essential": True, "value": config.issuer},
                aud={"essential": True, "value": config.issuer},
                exp={"essential": True},
                sub={"essential": True},
                client_id={"essential": True},
            ).validate(claims)
        except JoseError as exc:
            raise TokenRefused(f"claims: {exc}") from None
        return claims

    def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if current() is None:
                return start_sign_in(request.path, full=False)
            return view(*args, **kwargs)

        return wrapped

    @app.context_processor
    def _template_globals() -> dict[str, Any]:
        return {
            "local": current(),
            "csrf_token": csrf_token,
            "level_name": lambda acr: LEVELS.get(acr, acr or "—"),
            "when": lambda ts: (
                datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                if isinstance(ts, int | float)
                else "—"
            ),
            "issuer": config.issuer,
        }

    @app.after_request
    def _headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
            f"frame-ancestors 'none'; form-action 'self' {config.issuer_origin}",
        )
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        if request.endpoint != "static":
            headers.setdefault("Cache-Control", "no-store")
        return response

    def error_page(title: str, message: str, status: int) -> tuple[str, int]:
        return render_template("rp_error.html", title=title, message=message), status

    @app.errorhandler(400)
    def _bad_request(exc: Any) -> tuple[str, int]:
        return error_page("Something went wrong", str(exc.description), 400)

    @app.errorhandler(OAuthError)
    def _oauth_error(exc: OAuthError) -> tuple[str, int]:
        app.logger.warning("sign-in failed: %s %s", exc.error, exc.description)
        message = exc.description or exc.error or "The sign-in did not complete."
        return error_page("The sign-in did not complete", str(message), 400)

    @app.errorhandler(RequestException)
    def _provider_down(exc: Exception) -> tuple[str, int]:
        app.logger.warning("the identity provider did not answer: %s", exc)
        return error_page(
            "The identity provider does not answer",
            f"{config.issuer} could not be reached. Try again in a moment.",
            502,
        )

    # --- pages ---

    @app.get("/")
    def home() -> str:
        if request.args.get("state"):
            # back from the provider's logout: the state we sent comes back, once
            try:
                provider.validate_logout_response()
            except OAuthError:
                app.logger.info("a logout response with an unknown state: ignored")
        local = current()
        if local is None and session.get("key"):
            # this browser's local session was ended by a back-channel logout
            session.pop("key")
            session["signed_out"] = {"sid": session.pop("sid", None), "where": "elsewhere"}
        signed_out = session.get("signed_out") if local is None else None
        return render_template(
            "rp_home.html",
            signed_out=signed_out,
            backchannel_at=store.ended_at(signed_out.get("sid")) if signed_out else None,
        )

    @app.get("/login")
    def login() -> Response:
        return start_sign_in("/", full=False)

    @app.get("/callback")
    def callback() -> Response | tuple[str, int]:
        # RFC 9207: the response names its issuer; a mix-up attack would show another one
        metadata = provider.load_server_metadata()
        if request.args.get("iss") != metadata["issuer"]:
            return error_page(
                "The sign-in did not complete",
                "The answer did not come from the expected identity provider.",
                400,
            )
        # state, the code exchange with the PKCE verifier, and the ID token's signature, iss,
        # aud, exp and nonce: Authlib checks them all here
        token = provider.authorize_access_token()
        claims = dict(token["userinfo"])
        wanted = session.pop("wanted_acr", None)
        if wanted == ACR_HIGH and claims.get("acr") != ACR_HIGH:
            return error_page(
                "A full session is needed",
                "Patient records need a full session (smartcard), and the identity provider "
                "gave a limited one.",
                403,
            )
        previous = current()
        store.drop(session.get("key"))
        session.pop("signed_out", None)
        key = store.add(LocalSession(claims=claims, id_token=token["id_token"], token=dict(token)))
        session["key"] = key
        session["sid"] = claims.get("sid")
        session["csrf"] = secrets.token_urlsafe(24)  # a new session, a new token
        if previous is not None and previous.sub != claims["sub"]:
            app.logger.info("another person signed in on this browser")
        next_path = session.pop("next", "/")
        if not isinstance(next_path, str) or not next_path.startswith("/") or "//" in next_path:
            next_path = "/"
        return redirect(next_path)  # type: ignore[return-value]

    @app.get("/records")
    @login_required
    def records() -> Response | str | tuple[str, int]:
        local = current()
        assert local is not None
        if not local.is_full(config.full_level_max_age):
            return start_sign_in("/records", full=True)
        # the records API is a resource server: it gets the access token, as any API would;
        # Authlib refreshes it first when it has expired (and update_token keeps the new pair)
        try:
            answer = provider.get(
                f"{config.base_url}/api/records", token=local.token, timeout=HTTP_TIMEOUT
            )
        except (OAuthError, OAuth2Error) as exc:
            # the refresh was refused: the provider session is over (or was revoked)
            app.logger.info("refresh refused (%s): signing in again", exc)
            store.drop(session.pop("key", None))
            return start_sign_in("/records", full=True)
        if answer.status_code == 401 and "insufficient_user_authentication" in answer.headers.get(
            "WWW-Authenticate", ""
        ):
            # the token says limited (the full level has lapsed at the provider): step up again
            return start_sign_in("/records", full=True)
        if answer.status_code != 200:
            return error_page(
                "The records cannot be shown",
                f"The records API answered {answer.status_code}: "
                f"{answer.json().get('error_description', '')}",
                502,
            )
        return render_template("rp_records.html", records=answer.json()["records"])

    @app.post("/logout")
    def logout() -> Response:
        check_csrf()
        local = current()
        store.drop(session.get("key"))
        session.clear()
        if local is None:
            return redirect("/")  # type: ignore[return-value]
        session["signed_out"] = {"sid": local.sid, "where": "here"}
        # RP-initiated logout: the provider ends its session and, with a valid id_token_hint and a
        # registered post_logout_redirect_uri, sends the browser back here with our state
        return provider.logout_redirect(  # type: ignore[no-any-return]
            post_logout_redirect_uri=config.post_logout_redirect_uri,
            id_token_hint=local.id_token,
        )

    # --- for the provider and for programs ---

    @app.post("/backchannel-logout")
    def backchannel_logout() -> tuple[Response, int]:
        token = request.form.get("logout_token", "")
        try:
            claims = verify_logout_token(token)
        except TokenRefused as exc:
            app.logger.warning("back-channel logout refused: %s", exc)
            response = jsonify(error="invalid_request", error_description=str(exc))
            return response, 400
        ended = store.end_provider_session(claims.get("sid"), claims.get("sub"))
        app.logger.info(
            "back-channel logout: provider session %s ended, %d local session(s) with it",
            str(claims.get("sid", "-"))[:12],
            ended,
        )
        return Response(status=200), 200

    @app.get("/api/records")
    def api_records() -> tuple[Response, int]:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            response = jsonify(
                error="invalid_request", error_description="A bearer token is needed."
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response, 401
        try:
            claims = verify_access_token(token.strip())
        except TokenRefused as exc:
            response = jsonify(error="invalid_token", error_description=str(exc))
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response, 401
        if claims.get("acr") != ACR_HIGH:
            response = jsonify(
                error="insufficient_user_authentication",
                error_description="Patient records need a full session (smartcard).",
            )
            # RFC 9470: the client may step up with these
            response.headers["WWW-Authenticate"] = (
                f'Bearer error="insufficient_user_authentication", acr_values="{ACR_HIGH}"'
            )
            return response, 401
        return jsonify(records=FAKE_RECORDS, sub=claims["sub"]), 200

    return app


#: invented patients and documents: no real person's data, ever
FAKE_RECORDS = [
    {
        "patient": "Léa Bernard",
        "born": "1954-02-11",
        "date": "2025-11-03",
        "document": "Discharge letter, cardiology",
        "author": "Dr. P. Schmit",
    },
    {
        "patient": "Tom Wagner",
        "born": "1987-07-29",
        "date": "2025-10-21",
        "document": "Laboratory results (lipid panel)",
        "author": "Laboratoire Central",
    },
    {
        "patient": "Nora Hoffmann",
        "born": "2001-12-05",
        "date": "2025-09-14",
        "document": "Vaccination record",
        "author": "Dr. A. Muller",
    },
    {
        "patient": "Marc Kieffer",
        "born": "1949-04-18",
        "date": "2025-08-30",
        "document": "Medication summary",
        "author": "Pharmacie du Parc",
    },
]


def main() -> int:
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from werkzeug.serving import run_simple

    app = create_app(config)
    print(f"demo relying service (DSP) on {config.base_url}, provider {config.issuer}", flush=True)
    try:
        run_simple(config.host, config.port, app, threaded=True, use_reloader=False)
    except OSError as exc:
        print(
            f"error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
