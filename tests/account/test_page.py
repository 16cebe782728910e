"""The account page: one static script, a JSON data block, texts in French and English."""

from __future__ import annotations

import json
import re

from .helpers import sign_in


def page_data(response) -> dict:  # type: ignore[no-untyped-def,type-arg]
    match = re.search(
        rb'<script type="application/json" id="page-data">(.*?)</script>', response.data, re.S
    )
    assert match is not None
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def test_not_signed_in_the_page_says_so(browser) -> None:  # type: ignore[no-untyped-def]
    response = browser().client.get("/account?lang=en")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "You are not signed in here" in html
    assert "account.js" not in html and "<form" not in html
    assert page_data(response)["signed_in"] is False
    french = browser().client.get("/account", headers={"Accept-Language": "fr-LU,fr;q=0.9"})
    assert "êtes pas connecté ici" in french.get_data(as_text=True)


def test_a_limited_session_is_asked_for_the_current_password(browser, rp, anne) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    response = b.client.get("/account?lang=en")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<h1>Your account</h1>" in html
    assert "Anne Muller" in html and anne.matricule in html
    assert "Limited session (password)" in html
    assert '<div class="field" id="current-field">' in html  # not hidden
    assert 'autocomplete="current-password"' in html and 'autocomplete="new-password"' in html
    assert '<label for="new_password">New password</label>' in html
    assert 'id="new_password-error"' in html  # errors next to their field
    assert '<script src="/static/account.js" defer></script>' in html
    data = page_data(response)
    assert data["signed_in"] is True
    assert data["api"] == "/api/account"
    assert data["account"]["csrf_token"] == b.client.get("/api/account").json["csrf_token"]
    assert data["messages"]["account.sessions.title"] == "Your sessions"


def test_a_full_session_is_not(browser, rp, anne, revocation_server) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne, method="card")
    html = b.client.get("/account?lang=fr").get_data(as_text=True)
    assert "Votre compte" in html
    assert "Session complète (carte)" in html
    assert '<div class="field" id="current-field" hidden>' in html
    assert "votre mot de passe actuel n" in html
    assert "<time datetime=" in html


def test_the_page_keeps_the_strict_headers(browser, rp, anne) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    response = b.client.get("/account")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    # no inline script: the only <script> without src is the JSON data block
    scripts = re.findall(rb"<script([^>]*)>", response.data)
    assert all(b"src=" in attrs or b'type="application/json"' in attrs for attrs in scripts)
    script = b.client.get("/static/account.js")
    assert script.status_code == 200
    assert b"innerHTML" not in script.data  # the API's text is never parsed as HTML
    script.close()


def test_every_text_the_page_uses_exists_in_french_and_english() -> None:
    from pathlib import Path

    from authsvc.web.i18n import EN, FR

    root = Path(__file__).resolve().parents[2] / "authsvc"
    used = set(re.findall(r'\bt\("([a-z_.]+[a-z])"', (root / "templates/account.html").read_text()))
    used |= set(re.findall(r'\bt\("([a-z_.]+[a-z])"', (root / "static/account.js").read_text()))
    # built from the API's values in account.js
    used |= {"account.level.short.full", "account.level.short.limited"}
    used |= {"account.method.password", "account.method.smartcard"}
    assert len(used) > 40
    missing = sorted(k for k in used if k not in EN or k not in FR)
    assert missing == []
    for reason in ("too_short", "too_long", "contains_matricule", "contains_name"):
        assert f"error.weak_password.{reason}" in FR
    for code in (
        "login_required",
        "invalid_csrf_token",
        "current_password_required",
        "invalid_current_password",
        "account_locked",
        "same_password",
        "session_not_found",
        "conflict",
    ):
        assert f"error.{code}" in EN and f"error.{code}" in FR
