"""The card agent's HTTP service: a JSON API for trusted pages, and its own PIN page.

The protocol is documented in ``docs/card-agent.md``. In short:

- every request must carry ``Host: 127.0.0.1:<port>`` or ``localhost:<port>`` (DNS rebinding);
- ``/v1/…`` answers only origins on the allow-list (CORS, with the private-network preflight);
  the origin the card signs for is the request's ``Origin`` header, never a body field;
- ``/pin/<request_id>`` is the agent's own page, on the agent's own origin: the website's page
  cannot read or script it, and the PIN typed there goes to the card and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
from typing import Any, Protocol, TypeGuard

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from .. import __version__
from ..clock import Clock, system_clock
from .card import MAX_PIN_LENGTH, CardError, CardInfo, NoCard, PinBlocked, WrongPin
from .config import AgentSettings
from .store import AuthRequest, RequestStore, State, TooManyRequests, iso
from .texts import LANGUAGES, TEXTS

log = logging.getLogger("authsvc.cardagent")

AGENT_NAME = "authsvc-card-agent"
PROTOCOL = 1
MAX_BODY = 8 * 1024
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
CORS_METHODS = ("GET", "POST", "DELETE")
CORS_HEADERS = ("content-type",)
#: base64 (standard or URL-safe alphabet, padding optional) of at least 32 bytes, at most 128 chars
NONCE_PATTERN = re.compile(r"[A-Za-z0-9+/_-]{43,126}={0,2}")


class Reader(Protocol):
    """What the app needs of :class:`~authsvc.cardagent.card.CardReader` (tests may fake it)."""

    def cards(self) -> list[CardInfo]: ...

    def authenticate(
        self, card_id: str, pin: str | None, *, origin: str, nonce: str
    ) -> dict[str, str]: ...


def valid_nonce(value: object) -> TypeGuard[str]:
    """A challenge nonce: base64 of at least 32 bytes (INTERFACE §4: 32 random bytes)."""
    if not isinstance(value, str) or not NONCE_PATTERN.fullmatch(value):
        return False
    text = value.rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            raw = base64.urlsafe_b64decode(text)
        else:
            raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) >= 32


#: the protocol's bodies are flat objects: anything nested deeper is not one of them
MAX_DEPTH = 8


def _json_body() -> object:
    """The request's JSON body, or None when it is not JSON we can take (not UTF-8, malformed,
    or nested deeper than :data:`MAX_DEPTH`, which also keeps a recursive parser out of a
    ``RecursionError``)."""
    raw = request.get_data(cache=True)
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:  # at most MAX_BODY bytes: a cheap scan before parsing
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return None
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def json_error(status: int, code: str, description: str) -> Response:
    response = jsonify({"error": code, "error_description": description})
    response.status_code = status
    return response


def create_app(settings: AgentSettings, reader: Reader, *, clock: Clock = system_clock) -> Flask:
    """The card agent's application (served by werkzeug on 127.0.0.1 by ``authsvc card-agent``)."""
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY,
        MAX_FORM_MEMORY_SIZE=MAX_BODY,
        JSON_SORT_KEYS=False,
    )
    store = RequestStore(clock, settings.request_lifetime)
    app.extensions["cardagent"] = {"settings": settings, "reader": reader, "store": store}
    trusted = frozenset(settings.trusted_origins)
    hosts = frozenset(settings.hosts)

    # -- checks before anything else --

    @app.before_request
    def _guard() -> Response | None:
        host = (request.headers.get("Host") or "").lower()
        if host not in hosts:
            # A page on another host name that resolves to 127.0.0.1 (DNS rebinding).
            return json_error(403, "invalid_host", "This agent answers only on 127.0.0.1.")
        if (request.content_length or 0) > MAX_BODY:
            return json_error(413, "request_too_large", "The request body is too large.")
        g.origin = None
        if not request.path.startswith("/v1/"):
            return None
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS":
            return _preflight(origin)
        if origin is None:
            # Not a page's fetch(): a person or a tool looking at the status is fine.
            fetch_site = request.headers.get("Sec-Fetch-Site")
            if (
                request.path == "/v1/status"
                and request.method == "GET"
                and fetch_site in (None, "none")
            ):
                return None
            return json_error(403, "untrusted_origin", "The request has no Origin header.")
        if origin not in trusted:
            log.warning("refused a request from untrusted origin %.100s", origin)
            return json_error(403, "untrusted_origin", "This agent does not sign for this origin.")
        g.origin = origin
        return None

    def _preflight(origin: str | None) -> Response:
        if origin is None or origin not in trusted:
            return json_error(403, "untrusted_origin", "This agent does not sign for this origin.")
        method = (request.headers.get("Access-Control-Request-Method") or "").upper()
        asked = request.headers.get("Access-Control-Request-Headers") or ""
        names = {h.strip().lower() for h in asked.split(",") if h.strip()}
        if method not in CORS_METHODS or not names <= set(CORS_HEADERS):
            return json_error(403, "invalid_request", "This method or header is not allowed.")
        response = Response(status=204)
        headers = response.headers
        headers.remove("Content-Type")
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Methods"] = ", ".join(CORS_METHODS)
        headers["Access-Control-Allow-Headers"] = "Content-Type"
        headers["Access-Control-Allow-Private-Network"] = "true"
        headers["Access-Control-Max-Age"] = "600"
        headers["Vary"] = (
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
            "Access-Control-Request-Private-Network"
        )
        return response

    @app.after_request
    def _headers(response: Response) -> Response:
        headers = response.headers
        if request.path.startswith("/v1/"):
            if g.get("origin"):
                headers["Access-Control-Allow-Origin"] = g.origin
            if "Vary" not in headers:
                headers["Vary"] = "Origin"
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        if not request.path.startswith("/static/"):
            headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        response = json_error(status, codes.get(status, "invalid_request"), exc.name)
        if status == 405:
            allow = exc.get_headers()
            for name, value in allow:
                if name.lower() == "allow":
                    response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return json_error(500, "server_error", "An unexpected error occurred.")

    # -- the JSON API (trusted origins) --

    @app.get("/v1/status")
    def status() -> Response | tuple[dict[str, Any], int]:
        try:
            cards = reader.cards()
        except CardError as exc:
            return json_error(503, exc.code, exc.description)
        return {
            "agent": AGENT_NAME,
            "version": __version__,
            "protocol": PROTOCOL,
            "cards": [card.to_status() for card in cards],
        }, 200

    @app.post("/v1/authenticate")
    def authenticate() -> Response | tuple[dict[str, Any], int]:
        if request.mimetype != "application/json":
            return json_error(400, "invalid_request", "Send a JSON body (application/json).")
        body = _json_body()
        if not isinstance(body, dict):
            return json_error(400, "invalid_request", "The body must be a JSON object.")
        nonce = body.get("nonce")
        if not valid_nonce(nonce):
            return json_error(
                400, "invalid_request", "nonce must be the challenge's base64 of 32 random bytes."
            )
        try:
            cards = reader.cards()
        except CardError as exc:
            return json_error(503, exc.code, exc.description)
        if not cards:
            return json_error(
                409, "no_card", "No card is in the reader: insert the card and try again."
            )
        if all(card.pin_state == "locked" for card in cards):
            return json_error(409, "pin_blocked", "The card's PIN is blocked.")
        try:
            auth = store.create(g.origin, nonce)
        except TooManyRequests:
            response = json_error(429, "too_many_requests", "Too many requests are open.")
            response.headers["Retry-After"] = "10"
            return response
        log.info("authentication request from %s", auth.origin)
        return {
            "request_id": auth.id,
            "pin_url": f"{settings.base_url}/pin/{auth.id}",
            "expires_at": iso(auth.expires_at),
        }, 202

    def _own_request(request_id: str) -> AuthRequest | None:
        auth = store.get(request_id)
        if auth is None or not hmac.compare_digest(
            auth.origin.encode("utf-8"), (g.origin or "").encode("utf-8")
        ):
            return None
        return auth

    @app.get("/v1/authenticate/<request_id>")
    def result(request_id: str) -> Response | tuple[dict[str, Any], int]:
        auth = _own_request(request_id)
        if auth is None:
            return json_error(404, "unknown_request", "No such request (or it is over).")
        return store.collect(auth), 200

    @app.delete("/v1/authenticate/<request_id>")
    def cancel(request_id: str) -> Response:
        auth = _own_request(request_id)
        if auth is None:
            return json_error(404, "unknown_request", "No such request (or it is over).")
        store.fail(auth, "cancelled", "The website cancelled the request.")
        store.forget(auth)
        return Response(status=204)

    # -- the PIN page (the agent's own origin) --

    def _language() -> str:
        return request.accept_languages.best_match(LANGUAGES, default="en") or "en"

    def _page(
        auth: AuthRequest | None,
        *,
        state: str,
        messages: list[tuple[str, str]] | None = None,
        cards: list[CardInfo] | None = None,
        selected: str | None = None,
        retry: bool = False,
        close: bool = False,
        status: int = 200,
    ) -> Response:
        lang = _language()
        cards = cards or []
        usable = [card for card in cards if card.pin_state != "locked"]
        if cards and selected not in {card.card_id for card in usable}:
            selected = usable[0].card_id if usable else None
        html = render_template(
            "pin.html",
            lang=lang,
            t=TEXTS[lang],
            state=state,
            origin=auth.origin if auth else None,
            csrf_token=auth.csrf_token if auth else "",
            messages=messages or [],
            cards=cards,
            selected=selected,
            pin_pad_only=bool(cards) and all(card.pin_pad for card in cards),
            any_pin_pad=any(card.pin_pad for card in cards),
            retry=retry,
            close=close,
        )
        response = Response(html, status=status, mimetype="text/html")
        response.headers["Content-Language"] = lang
        response.headers["Vary"] = "Accept-Language"
        return response

    def _final_page(auth: AuthRequest) -> Response:
        if auth.state is State.DONE:
            return _page(auth, state="done", messages=[("done", "success")], close=True)
        message = {"cancelled": "cancelled", "expired": "expired", "pin_blocked": "pin_blocked"}
        key = message.get(auth.error or "", "over")
        return _page(
            auth, state=auth.error or "failed", messages=[(key, "error")], close=key == "cancelled"
        )

    def _over() -> Response:
        return _page(None, state="over", messages=[("over", "error")], status=404)

    def _form(
        auth: AuthRequest, messages: list[tuple[str, str]], selected: str | None = None
    ) -> Response:
        try:
            cards = reader.cards()
        except CardError:
            store.retry(auth, "card_error")
            return _page(auth, state="pending", messages=[("card_error", "error")], retry=True)
        if not cards:
            store.retry(auth, "no_card")
            return _page(
                auth, state="pending", messages=[*messages, ("no_card", "error")], retry=True
            )
        if all(card.pin_state == "locked" for card in cards):
            store.fail(auth, "pin_blocked", "The card's PIN is blocked.")
            return _final_page(auth)
        if any(card.pin_state == "final_try" for card in cards) and ("final_try", "error") not in (
            messages
        ):
            messages = [*messages, ("final_try", "error")]
        return _page(auth, state="pending", messages=messages, cards=cards, selected=selected)

    @app.get("/pin/<request_id>")
    def pin_page(request_id: str) -> Response:
        auth = store.get(request_id)
        if auth is None:
            return _over()
        if auth.state is not State.PENDING:
            return _final_page(auth)
        return _form(auth, [])

    @app.post("/pin/<request_id>")
    def pin_submit(request_id: str) -> Response:
        origin = request.headers.get("Origin")
        fetch_site = request.headers.get("Sec-Fetch-Site")
        # The page's own form: Origin absent or the agent's own, or "null" — what browsers send
        # under this page's Referrer-Policy: no-referrer — when the browser vouches (Sec-Fetch-Site,
        # which pages cannot set) that the post comes from the same origin.
        own = (
            origin is None
            or origin in settings.own_origins
            or (origin == "null" and fetch_site == "same-origin")
        )
        if not own or fetch_site not in (None, "same-origin"):
            log.warning("refused a PIN form posted from %.100s", origin or fetch_site)
            return _page(None, state="refused", messages=[("bad_form", "error")], status=403)
        auth = store.get(request_id)
        if auth is None:
            return _over()
        token = request.form.get("csrf_token", "")
        if not hmac.compare_digest(token.encode("utf-8"), auth.csrf_token.encode("ascii")):
            return _page(None, state="refused", messages=[("bad_form", "error")], status=403)
        action = request.form.get("action", "sign")
        if action == "cancel":
            store.fail(auth, "cancelled", "The user cancelled.")
            return _final_page(auth)
        card = request.form.get("card", "")
        pin = request.form.get("pin", "")
        with auth.submission:
            if not store.start_signing(auth):
                return _final_page(auth)
            try:
                if len(pin) > MAX_PIN_LENGTH:
                    store.retry(auth, None)
                    return _form(auth, [("wrong_pin", "error")], card)
                token_ = reader.authenticate(
                    card, pin or None, origin=auth.origin, nonce=auth.nonce
                )
            except WrongPin as exc:
                if not pin:
                    store.retry(auth, None)
                    return _form(auth, [("pin_empty", "error")], card)
                store.retry(auth, "wrong_pin")
                messages = [("wrong_pin", "error")]
                if exc.final_try:
                    messages.append(("final_try", "error"))
                return _form(auth, messages, card)
            except PinBlocked as exc:
                store.fail(auth, "pin_blocked", exc.description)
                return _final_page(auth)
            except NoCard:
                store.retry(auth, "no_card")
                return _form(auth, [("card_removed", "error")])
            except CardError as exc:
                log.warning("the card could not sign: %s", exc.description)
                store.retry(auth, "card_error")
                return _form(auth, [("card_error", "error")], card)
            except BaseException:
                store.retry(auth, None)
                raise
            store.succeed(auth, token_)
            log.info("signed a challenge for %s", auth.origin)
            return _final_page(auth)

    return app
