"""The demo relying service (demo/relying_party.py, the shared care record's stand-in) against the
real provider, in Chromium: sign in with the password (limited), step up with the card for the
patient records (full), sign out (RP-initiated), and the back-channel logout that follows.

The provider (``authsvc serve``), the card agent and the relying service each run as their own
process on a free port; the relying service is registered with ``authsvc clients create``, as an
operator would. Screenshots go to docs/screenshots/rp-*.png (docs/relying-party.md shows them)
when ``AUTHSVC_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select

from authsvc import matricule
from authsvc.app import Services
from authsvc.directory.importer import import_directory
from authsvc.outbox.models import OutboxMessage
from softhsm.testca import Card

from ..conftest import run_authsvc
from ..mailserver import free_port
from ..oidc.conftest import PASSWORD, Person, activate

RP_SCRIPT = Path(__file__).resolve().parents[2] / "demo" / "relying_party.py"
LUC = matricule.make(date(1972, 6, 9), 58)
ACR_LOW = "http://eidas.europa.eu/LoA/low"
ACR_HIGH = "http://eidas.europa.eu/LoA/high"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


@pytest.fixture
def person(provider: dict[str, Any], services: Services, make_card: Callable[..., Card]) -> Person:
    """Luc Reuter, a dentist, with an active account: a password and a bound card."""
    with services.db.transaction() as db:
        import_directory(
            db,
            (
                "matricule,given_name,family_name,profession,provider_code\n"
                f"{LUC},Luc,Reuter,dentist,512345-08\n"
            ).encode(),
            actor="test",
            clock=services.clock,
        )
    card = make_card(given_name="Luc", family_name="Reuter", user_pin="135790")
    return activate(services, LUC, card)


@pytest.fixture
def relying_party(provider: dict[str, Any], processes: Any) -> dict[str, str]:
    """The demo relying service on a free port, registered for that port with the CLI."""
    pytest.importorskip(
        "requests",
        reason="the demo relying service needs requests (Authlib's Flask client uses it): "
        "pip install requests",
    )
    base = f"http://127.0.0.1:{free_port()}"
    created = run_authsvc(
        "clients",
        "create",
        "--name",
        "Shared care record",
        "--redirect-uri",
        f"{base}/callback",
        "--post-logout-redirect-uri",
        f"{base}/",
        "--backchannel-logout-uri",
        f"{base}/backchannel-logout",
        "--json",
        env=provider["env"],
    )
    assert created.returncode == 0, created.stderr
    registration = json.loads(created.stdout)
    processes.start(
        [sys.executable, str(RP_SCRIPT)],
        {
            "DEMO_RP_ISSUER": provider["issuer"],
            "DEMO_RP_CLIENT_ID": registration["client_id"],
            "DEMO_RP_CLIENT_SECRET": registration["client_secret"],
            "DEMO_RP_BASE_URL": base,
        },
        f"{base}/",
    )
    return {"url": base, "client_id": registration["client_id"]}


def claim(page: Any, name: str) -> str:
    return str(page.locator(f"[data-claim={name}]").inner_text()).strip()


def sign_in_with_password(page: Any, rp: str, issuer: str, person: Person) -> None:
    page.goto(rp + "/")
    page.get_by_role("main").get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(issuer) + r"/login\?flow="))
    page.get_by_label("Matricule").fill(person.matricule)
    page.get_by_label("Password", exact=True).fill(PASSWORD)


def wait_for_text(page: Any, url: str, text: str, timeout: float = 30) -> None:
    """Reload ``url`` until the page shows ``text`` (what a person does, pressing F5)."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        if text in page.locator("main").inner_text():
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{url} never showed {text!r}: {page.locator('main').inner_text()}"
            )
        time.sleep(0.5)


def test_sign_in_step_up_and_sign_out(  # type: ignore[no-untyped-def]
    screenshot, browser, provider, card_agent, relying_party, person, services
) -> None:
    # (screenshot first: it reads AUTHSVC_UPDATE_SCREENSHOTS, which the env fixture clears)
    rp, issuer = relying_party["url"], provider["issuer"]
    context = browser.new_context(locale="en-GB", viewport={"width": 1000, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(rp + "/")
    assert page.locator("html").get_attribute("lang") == "en"
    screenshot(page, "rp-1-signed-out")

    # 1. the password: a limited session
    sign_in_with_password(page, rp, issuer, person)
    screenshot(page, "rp-2-provider-sign-in")
    page.get_by_label("Password", exact=True).press("Enter")
    page.wait_for_url(rp + "/")
    assert claim(page, "acr") == "limited"
    assert claim(page, "amr") == "pwd"
    assert claim(page, "name") == "Luc Reuter"
    assert claim(page, "profession") == "dentist"
    sub, sid = claim(page, "sub"), claim(page, "sid")
    assert sub == person.subject and sub != LUC  # opaque, never the matricule
    screenshot(page, "rp-3-limited")

    # 2. the patient records need a full session: the provider asks for the card, and only for it
    page.get_by_role("navigation").get_by_role("link", name="Patient records").click()
    page.wait_for_url(re.compile(re.escape(issuer) + r"/login\?flow="))
    page.get_by_role("heading", name="With your smartcard (full session)").wait_for()
    assert page.locator("input[type=password]").count() == 0
    assert page.get_by_label("Matricule").count() == 0
    screenshot(page, "rp-4-step-up")
    with page.expect_popup() as popup_info:
        page.get_by_role("button", name="Use my card").click()
    popup = popup_info.value
    popup.get_by_label("PIN of the card").wait_for()
    if popup.locator("input[name=card]").count() > 1:  # other tests' cards are in the reader
        popup.get_by_label(re.compile(re.escape(person.card.label))).check()
    else:
        screenshot(popup, "rp-5-card-pin")
    popup.get_by_label("PIN of the card").fill(person.card.user_pin)
    popup.get_by_label("PIN of the card").press("Enter")
    page.wait_for_url(rp + "/records", timeout=30000)
    page.get_by_role("heading", name="Patient records").wait_for()
    assert claim(page, "acr") == "full"
    assert claim(page, "sub") == sub  # the same person
    assert page.get_by_role("row", name=re.compile("Léa Bernard")).count() == 1
    screenshot(page, "rp-6-records")

    # the same provider session, stepped up: full, card methods, same sid
    page.get_by_role("navigation").get_by_role("link", name="Home").click()
    assert claim(page, "acr") == "full"
    assert {"sc", "hwk", "pin"} <= set(claim(page, "amr").split(", "))
    assert claim(page, "sid") == sid
    screenshot(page, "rp-7-full")

    # 3. sign out: RP-initiated logout, straight back here (id_token_hint, no question asked)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(re.escape(rp) + r"/\?state="))
    page.get_by_role("status").get_by_text("You are signed out").wait_for()
    assert page.locator("[data-claim]").count() == 0
    # the provider told this service, by back-channel; the service verified the logout token
    wait_for_text(page, rp + "/", "confirmed the end of your session")
    page.get_by_role("status").get_by_text("You are signed out").wait_for()
    screenshot(page, "rp-8-signed-out")
    with services.db.read_transaction() as db:
        messages = db.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "backchannel_logout")
        ).all()
    assert len(messages) == 1
    assert messages[0].delivered_at is not None  # the service answered 2xx
    assert messages[0].attempts == 1

    # the provider session is over: signing in again asks for the password again
    page.get_by_role("main").get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(issuer) + r"/login\?flow="))
    page.get_by_label("Password", exact=True).wait_for()
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()


def test_signing_out_at_the_provider_ends_the_session_here(  # type: ignore[no-untyped-def]
    browser, provider, relying_party, person
) -> None:
    """A back-channel logout ends the local session of that provider session (``sid``)."""
    rp, issuer = relying_party["url"], provider["issuer"]
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    sign_in_with_password(page, rp, issuer, person)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(rp + "/")
    assert claim(page, "acr") == "limited"

    # the person signs out at the provider itself (another tab, another service …)
    page.goto(issuer + "/logout")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="You are signed out").wait_for()

    wait_for_text(page, rp + "/", "Your session has ended")
    assert page.locator("[data-claim]").count() == 0
    page.goto(rp + "/records")  # the records ask for a sign-in again
    page.wait_for_url(re.compile(re.escape(issuer) + r"/login\?flow="))
    context.close()


# --- the back-channel endpoint and the records API, without a browser -----------------------------


def post_form(url: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
    body = urllib.parse.urlencode(data).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as r:
            return r.status, {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def get_bearer(url: str, token: str | None) -> tuple[int, dict[str, Any], str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, json.loads(r.read()), ""
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), exc.headers.get("WWW-Authenticate", "")


@pytest.fixture
def provider_keys(provider: dict[str, Any], services: Services) -> Services:
    """The provider's signing keys, to sign tokens as it would (after it has made them)."""
    urllib.request.urlopen(provider["issuer"] + "/jwks.json", timeout=10).close()
    return services


def test_backchannel_endpoint_refuses_bad_logout_tokens(  # type: ignore[no-untyped-def]
    provider, relying_party, provider_keys
) -> None:
    url = relying_party["url"] + "/backchannel-logout"
    now = int(time.time())
    good = {
        "iss": provider["issuer"],
        "aud": relying_party["client_id"],
        "iat": now,
        "exp": now + 120,
        "jti": "jti-good",
        "events": {BACKCHANNEL_EVENT: {}},
        "sub": "someone",
        "sid": "some-session",
    }

    def signed(claims: dict[str, Any], typ: str = "logout+jwt", alg: str = "ES256") -> str:
        return provider_keys.keys.sign(claims, alg=alg, typ=typ)

    foreign = ECKey.generate_key("P-256", parameters={"kid": "not-the-provider's"})
    refused = {
        "nothing": "",
        "not a JWT": "abc.def",
        "signed by another key": jwt.encode(
            {"alg": "ES256", "typ": "logout+jwt", "kid": "not-the-provider's"}, good, foreign
        ),
        "an ID token": signed({**good, "jti": "j1"}, typ="JWT"),
        "another issuer": signed({**good, "jti": "j2", "iss": "https://other.example"}),
        "another audience": signed({**good, "jti": "j3", "aud": "another-client"}),
        "no event": signed({**good, "jti": "j4", "events": {}}),
        "a nonce": signed({**good, "jti": "j5", "nonce": "n"}),
        "neither sid nor sub": signed(
            {k: v for k, v in good.items() if k not in ("sid", "sub")} | {"jti": "j6"}
        ),
        "expired": signed({**good, "jti": "j7", "iat": now - 900, "exp": now - 700}),
        "no iat": signed({k: v for k, v in good.items() if k != "iat"} | {"jti": "j8"}),
    }
    for what, token in refused.items():
        status, body = post_form(url, {"logout_token": token})
        assert status == 400, what
        assert body["error"] == "invalid_request", what

    assert post_form(url, {"logout_token": signed(good)})[0] == 200
    assert post_form(url, {"logout_token": signed(good, alg="RS256")})[0] == 400  # replayed jti
    assert post_form(url, {"logout_token": signed({**good, "jti": "j9"}, alg="RS256")})[0] == 200


def test_records_api_checks_access_tokens(  # type: ignore[no-untyped-def]
    provider, relying_party, provider_keys
) -> None:
    """The records API is the resource-server example of docs/relying-party.md."""
    url = relying_party["url"] + "/api/records"
    now = int(time.time())
    claims = {
        "iss": provider["issuer"],
        "sub": "someone",
        "aud": provider["issuer"],
        "client_id": relying_party["client_id"],
        "scope": "openid profile",
        "iat": now,
        "exp": now + 300,
        "jti": "at-1",
        "acr": ACR_HIGH,
        "auth_time": now,
    }

    def signed(c: dict[str, Any], typ: str = "at+jwt") -> str:
        return provider_keys.keys.sign(c, typ=typ)

    status, body, challenge = get_bearer(url, None)
    assert (status, challenge) == (401, "Bearer")
    for what, token in {
        "garbage": "garbage",
        "an ID token": signed(claims, typ="JWT"),
        "expired": signed({**claims, "iat": now - 900, "exp": now - 600}),
        "another issuer": signed({**claims, "iss": "https://other.example"}),
        "another audience": signed({**claims, "aud": "https://api.other.example"}),
    }.items():
        status, body, challenge = get_bearer(url, token)
        assert (status, body["error"]) == (401, "invalid_token"), what
        assert 'error="invalid_token"' in challenge, what

    status, body, challenge = get_bearer(url, signed({**claims, "acr": ACR_LOW}))
    assert (status, body["error"]) == (401, "insufficient_user_authentication")
    assert f'acr_values="{ACR_HIGH}"' in challenge  # RFC 9470: step up

    status, body, _ = get_bearer(url, signed(claims))
    assert status == 200
    assert body["sub"] == "someone"
    assert {r["patient"] for r in body["records"]} >= {"Léa Bernard"}


def test_records_refresh_the_access_token_and_step_up_when_it_says_limited(  # type: ignore[no-untyped-def]
    browser, provider, person
) -> None:
    """Run in-process, so that the test can age the service's tokens: an expired access token is
    refreshed by Authlib (the rotated refresh token is kept), and the records API's
    ``insufficient_user_authentication`` (the refreshed token says limited) sends the person to
    the step-up."""
    pytest.importorskip("requests", reason="the demo relying service needs requests")
    import importlib.util
    import threading

    from werkzeug.serving import make_server

    spec = importlib.util.spec_from_file_location("demo_relying_party", RP_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    created = run_authsvc(
        *("clients", "create", "--name", "DSP", "--redirect-uri", f"{base}/callback", "--json"),
        env=provider["env"],
    )
    registration = json.loads(created.stdout)
    config = module.Config.from_env(
        {
            "DEMO_RP_ISSUER": provider["issuer"],
            "DEMO_RP_CLIENT_ID": registration["client_id"],
            "DEMO_RP_CLIENT_SECRET": registration["client_secret"],
            "DEMO_RP_BASE_URL": base,
        }
    )
    app = module.create_app(config)
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        context = browser.new_context(locale="en-GB")
        page = context.new_page()
        sign_in_with_password(page, base, provider["issuer"], person)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(base + "/")
        (local,) = app.extensions["demo_rp"]._sessions.values()
        spent = local.token["refresh_token"]
        # the service believes the session full, but its access token has expired
        local.claims.update(acr=ACR_HIGH, auth_time=int(time.time()))
        local.token["expires_at"] = int(time.time()) - 10

        page.goto(base + "/records")
        assert local.token["refresh_token"] != spent  # refreshed, and the new pair kept
        assert local.token["expires_at"] > time.time()
        # the refreshed access token tells the truth (limited): the records API refuses it, and
        # the service steps the person up
        page.wait_for_url(re.compile(re.escape(provider["issuer"]) + r"/login\?flow="))
        page.get_by_role("heading", name="With your smartcard (full session)").wait_for()
        context.close()
    finally:
        server.shutdown()
