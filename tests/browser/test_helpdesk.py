"""A helpdesk agent revokes a lost card in the console, in a real browser.

The real provider (``authsvc serve``) and card agent; Chromium (headless) drives the console. The
agent signs in with her own card (the PIN typed in the card agent's window), finds the
professional by name, revokes the card (reason: lost), and sees what it did: the card revoked and
the session it had opened — a real card sign-in to a relying service, made before through the
provider's API — ended. Screenshots of each step go to docs/screenshots/ (docs/helpdesk.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from sqlalchemy import select

from authsvc import matricule
from authsvc.cards.models import Card as BoundCard
from authsvc.cards.models import CardStatus
from authsvc.directory.importer import import_directory
from authsvc.sessions.models import ProviderSession
from softhsm.testca import Card

from ..card_signing import sign_challenge
from ..conftest import run_authsvc
from ..oidc.conftest import activate

ANNE = matricule.make(date(1970, 5, 17), 1)
LUCIE = matricule.make(date(1985, 9, 30), 12)
RP = "https://dsp.example.test/callback"
ACR_HIGH = "http://eidas.europa.eu/LoA/high"


@pytest.fixture
def people(services, provider, make_card) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Anne Muller, a doctor with an active account and her card; Lucie Weber, a helpdesk agent of
    the agency (an account with the helpdesk role and her own card)."""
    data = (
        "matricule,given_name,family_name,profession,provider_code\n"
        f"{ANNE},Anne,Muller,doctor,123456-78\n{LUCIE},Lucie,Weber,agency staff,900001-01\n"
    ).encode()
    with services.db.transaction() as db:
        import_directory(db, data, actor="test", clock=services.clock)
    anne = activate(services, ANNE, make_card(given_name="Anne", family_name="Muller"))
    lucie = activate(
        services, LUCIE, make_card(given_name="Lucie", family_name="Weber", user_pin="135790")
    )
    granted = run_authsvc("staff", "grant", LUCIE, "helpdesk", env=provider["env"])
    assert granted.returncode == 0, granted.stderr
    return {"anne": anne, "lucie": lucie}


def card_sign_in(issuer: str, client: dict[str, str], card: Card, softhsm: Any) -> dict[str, Any]:
    """Anne signs in to the shared care record with her card, through the provider's API (what
    the sign-in page does); the relying service exchanges the code: its tokens."""
    client_id = client["client_id"]
    http = requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": RP,
        "scope": "openid profile",
        "state": "s1",
        "nonce": "n1",
        "acr_values": ACR_HIGH,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    start = http.get(f"{issuer}/authorize?{urlencode(query)}", allow_redirects=False, timeout=10)
    assert start.headers["Location"].startswith("/login?flow="), start.headers
    flow_id = start.headers["Location"].split("=", 1)[1]
    flow = http.get(f"{issuer}/api/login/{flow_id}", timeout=10).json()
    token = sign_challenge(
        softhsm, card, nonce=flow["challenge"]["nonce"], origin=flow["challenge"]["origin"]
    )
    signed = http.post(
        f"{issuer}/api/login/{flow_id}/smartcard",
        json={"csrf_token": flow["csrf_token"], "auth_token": token},
        timeout=10,
    )
    assert signed.status_code == 200, signed.text
    back = http.get(signed.json()["redirect_to"], allow_redirects=False, timeout=10)
    code = parse_qs(urlsplit(back.headers["Location"]).query)["code"][0]
    tokens = requests.post(
        f"{issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": RP,
            "code_verifier": verifier,
        },
        auth=(client_id, client["client_secret"]),
        timeout=10,
    )
    assert tokens.status_code == 200, tokens.text
    return tokens.json()  # type: ignore[no-any-return]


def test_the_helpdesk_revokes_a_lost_card(
    screenshot, browser, provider, card_agent, people, services, softhsm
) -> None:  # type: ignore[no-untyped-def]
    # (screenshot first: it reads AUTHSVC_UPDATE_SCREENSHOTS before the env fixture clears AUTHSVC_*)
    issuer = provider["issuer"]
    anne, lucie = people["anne"], people["lucie"]
    created = run_authsvc(
        "clients", "create", "--name", "Shared care record", "--redirect-uri", RP,
        "--require-acr", "high", "--json",
        env=provider["env"],
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    dsp = json.loads(created.stdout)
    anne_tokens = card_sign_in(issuer, dsp, anne.card, softhsm)

    context = browser.new_context(locale="en-GB", viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # 1. the console asks for the card, and only the card
    page.goto(f"{issuer}/helpdesk")
    page.wait_for_url(re.compile(r"/login\?flow="))
    page.get_by_role("heading", name="Sign in").wait_for()
    assert page.get_by_label("Password").count() == 0
    screenshot(page, "helpdesk-1-sign-in")
    with page.expect_popup() as popup_info:
        page.get_by_role("button", name="Use my card").click()
    popup = popup_info.value
    popup.get_by_label("PIN of the card").wait_for()
    if popup.locator("input[name=card]").count() > 1:  # other tests' cards are in the reader too
        popup.get_by_label(re.compile(re.escape(lucie.card.label))).check()
    popup.get_by_label("PIN of the card").fill(lucie.card.user_pin)
    popup.get_by_label("PIN of the card").press("Enter")
    page.get_by_role("heading", name="Find a professional").wait_for(timeout=30000)
    assert "Signed in as Lucie Weber" in page.inner_text("nav.console")

    # 2. find Anne by name, with the keyboard
    page.get_by_label("Matricule or name").fill("muller")
    page.get_by_label("Matricule or name").press("Enter")
    results = page.get_by_role("table")
    results.wait_for()
    assert "Anne Muller" in results.inner_text()
    screenshot(page, "helpdesk-2-search")
    page.get_by_role("link", name="Anne Muller").click()
    page.get_by_role("heading", name=re.compile("Anne Muller")).wait_for()
    sessions = page.get_by_role("table", name=re.compile("Open sessions"))
    assert "Shared care record" in sessions.inner_text()
    assert "full (smartcard)" in sessions.inner_text()
    screenshot(page, "helpdesk-3-professional")

    # 3. revoke her card: the reason, then confirm
    page.get_by_role("link", name=re.compile("Revoke")).click()
    page.get_by_role("heading", name="Revoke a smartcard").wait_for()
    assert "open now: 1" in page.inner_text("main")
    page.get_by_role("button", name="Revoke the card now").click()  # no reason yet
    page.get_by_text("Choose the reason.").first.wait_for()
    page.get_by_label("lost", exact=True).check()
    screenshot(page, "helpdesk-4-revoke")
    page.get_by_role("button", name="Revoke the card now").click()

    # 4. what it did
    status = page.locator("#status-message")
    status.wait_for()
    said = status.inner_text()
    assert "The card is revoked" in said
    assert f"Cards revoked: 1 ({anne.card.serial_hex})" in said
    assert "Sessions ended: 1" in said
    assert "Tokens revoked: 2" in said  # her refresh token and her access token
    cards = page.get_by_role("table", name=re.compile("Cards bound"))
    assert "revoked" in cards.inner_text()
    assert "lost" in cards.inner_text()
    page.get_by_text("No open session.").wait_for()
    screenshot(page, "helpdesk-5-revoked")

    # 5. a new letter for the new card: the code, shown once, to print and send by post
    page.get_by_role("button", name="Issue a new letter").click()
    code = page.locator("#activation-code")
    code.wait_for()
    assert re.fullmatch(r"[A-Z0-9]{4}(-[A-Z0-9]{4}){3}", code.inner_text())
    screenshot(page, "helpdesk-6-letter")
    page.reload()
    page.get_by_role("heading", name=re.compile("Anne Muller")).wait_for()
    assert page.locator("#activation-code").count() == 0

    # 6. the audit trail says who did it
    page.get_by_role("link", name="Audit trail", exact=True).click()
    page.get_by_label("Event (beginning of its name)").fill("helpdesk:")
    page.get_by_label("Event (beginning of its name)").press("Enter")
    trail = page.get_by_role("table", name=re.compile("Events matching"))
    trail.wait_for()
    assert "helpdesk:card:revoked" in trail.inner_text()
    assert "Lucie Weber" in trail.inner_text()
    screenshot(page, "helpdesk-7-audit")
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()

    # the shared care record's tokens from her session stopped working
    refreshed = requests.post(
        f"{issuer}/token",
        data={"grant_type": "refresh_token", "refresh_token": anne_tokens["refresh_token"]},
        auth=(dsp["client_id"], dsp["client_secret"]),
        timeout=10,
    )
    assert refreshed.json()["error"] == "invalid_grant"
    introspected = requests.post(
        f"{issuer}/introspect",
        data={"token": anne_tokens["access_token"]},
        auth=(dsp["client_id"], dsp["client_secret"]),
        timeout=10,
    )
    assert introspected.json() == {"active": False}

    # and in the database: the card revoked, Anne's session ended
    with services.db.read_transaction() as db:
        card = db.scalars(select(BoundCard).where(BoundCard.account_id == anne.account_id)).one()
        assert card.status == CardStatus.REVOKED
        assert card.revoked_reason == "lost"
        ended = db.scalars(
            select(ProviderSession).where(ProviderSession.account_id == anne.account_id)
        ).one()
        assert ended.ended_at is not None
