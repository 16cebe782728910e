"""A professional activates their account in a real browser, from the letter to "active".

Chromium (headless, Debian's) drives the activation pages of a real ``authsvc serve``; the code
arrives by a real SMTP server; the PIN is typed into the card agent's own window.
Screenshots of each step go to docs/screenshots/ (docs/activation.md shows them).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pytest

from authsvc import matricule
from softhsm.testca import Card

from ..conftest import run_authsvc

M = matricule.make(date(1976, 3, 14), 27)


@pytest.fixture
def letter(provider: dict[str, Any], tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    csv = tmp_path / "hpd.csv"
    csv.write_text(
        "matricule,given_name,family_name,profession,provider_code\n"
        f"{M},Claire,Hoffmann,doctor,212345-67\n"
    )
    env = provider["env"]
    assert run_authsvc("directory", "import", str(csv), env=env).returncode == 0
    issued = run_authsvc("letters", "issue", M, "--json", env=env)
    assert issued.returncode == 0, issued.stderr
    import json

    return {"matricule": M, "code": json.loads(issued.stdout)["activation_code"]}


def test_activation_in_the_browser(
    browser, provider, card_agent, letter, make_card, smtp_server, screenshot
) -> None:  # type: ignore[no-untyped-def]
    card: Card = make_card(given_name="Claire", family_name="Hoffmann", user_pin="246810")
    context = browser.new_context(locale="en-GB", viewport={"width": 900, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(provider["issuer"] + "/activate")
    assert page.locator("html").get_attribute("lang") == "en"
    screenshot(page, "activation-1-letter")

    # 1. the letter: code + matricule, typed with the keyboard only
    page.get_by_label("Activation code").fill(letter["code"].lower())
    page.get_by_label("Matricule").fill(letter["matricule"])
    page.get_by_label("Matricule").press("Enter")
    page.get_by_role("heading", name="Your email address").wait_for()
    screenshot(page, "activation-2-email")

    # 2. the email address, and the code that arrives by mail
    page.get_by_role("textbox", name="Email address").fill("claire.hoffmann@example.lu")
    page.get_by_role("button", name="Send the code").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    mail = smtp_server.inbox.wait(1)[0]
    code = smtp_server.inbox.code(mail)
    page.get_by_label("Verification code").fill("000000" if code != "000000" else "111111")
    page.get_by_role("button", name="Verify").click()
    page.locator("#code-error").wait_for(state="visible")
    assert page.locator("#code").get_attribute("aria-invalid") == "true"
    screenshot(page, "activation-3-wrong-code")
    page.get_by_label("Verification code").fill(code)
    page.get_by_role("button", name="Verify").click()
    page.get_by_role("heading", name="Choose a password").wait_for()

    # 3. the password: a weak one first, refused next to the field
    page.get_by_label("New password").fill("password1234")
    page.get_by_label("Repeat the password").fill("password1234")
    page.get_by_role("button", name="Continue").click()
    page.locator("#password-error").wait_for(state="visible")
    screenshot(page, "activation-4-weak-password")
    page.get_by_label("New password").fill("zebra lantern quietly orbit")
    page.get_by_label("Repeat the password").fill("zebra lantern quietly orbit")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Your LuxTrust smartcard").wait_for()
    screenshot(page, "activation-5-smartcard")

    # 4. the card: the agent's own window asks for the PIN
    with page.expect_popup() as popup_info:
        page.get_by_role("button", name="Use my card").click()
    popup = popup_info.value
    popup.get_by_label("PIN of the card").wait_for()
    choices = popup.locator("input[name=card]")
    if choices.count() > 1:  # other tests' cards are in the reader too: choose ours
        popup.get_by_label(re.compile(re.escape(card.label))).check()
    else:
        screenshot(popup, "activation-6-agent-pin")
    popup.get_by_label("PIN of the card").fill(card.user_pin)
    popup.get_by_label("PIN of the card").press("Enter")
    try:
        page.get_by_role("heading", name="Your account is active").wait_for(timeout=30000)
    except Exception:
        print(
            "PAGE STATUS:",
            page.locator("#card-status").inner_text(),
            page.locator("#form-error").inner_text(),
        )
        print("CONSOLE:", errors)
        try:
            print("POPUP:", popup.inner_text("body")[:2000], popup.url)
        except Exception as e:
            print("popup gone", e)
        raise
    screenshot(page, "activation-7-active")
    assert not [e for e in errors if "Content Security Policy" in e], errors

    # the "account activated" mail follows
    activated = smtp_server.inbox.wait(2)[1]
    assert "active" in str(activated["Subject"]).lower()
    context.close()


def test_start_page_in_french_and_german(browser, provider, screenshot) -> None:  # type: ignore[no-untyped-def]
    for locale, heading in (
        ("fr-LU", "Activer votre compte"),
        ("de-LU", "Willkommen! Aktivieren Sie Ihr Konto"),
    ):
        context = browser.new_context(locale=locale)
        page = context.new_page()
        page.goto(provider["issuer"] + "/activate")
        page.get_by_role("heading", name=heading).wait_for()
        assert page.locator("html").get_attribute("lang") == locale[:2]
        if locale == "de-LU":
            screenshot(page, "activation-welcome-de")
        context.close()


def test_no_agent_tells_the_user_what_to_do(browser, provider, letter, smtp_server) -> None:  # type: ignore[no-untyped-def]
    """No card agent runs: the page says so instead of failing silently."""
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.goto(provider["issuer"] + "/activate")
    page.get_by_label("Activation code").fill(letter["code"])
    page.get_by_label("Matricule").fill(letter["matricule"])
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("textbox", name="Email address").fill("claire.hoffmann@example.lu")
    page.get_by_role("button", name="Send the code").click()
    page.get_by_label("Verification code").fill(
        smtp_server.inbox.code(smtp_server.inbox.wait(1)[0])
    )
    page.get_by_role("button", name="Verify").click()
    page.get_by_label("New password").fill("zebra lantern quietly orbit")
    page.get_by_label("Repeat the password").fill("zebra lantern quietly orbit")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Use my card").click()
    page.get_by_text("No card agent answers on this computer").wait_for()
    context.close()


def to_card_step(page: Any, issuer: str, letter: dict[str, str], smtp_server: Any) -> None:
    """From the letter to the smartcard step, in English."""
    page.goto(issuer + "/activate?lang=en")
    page.get_by_label("Activation code").fill(letter["code"])
    page.get_by_label("Matricule").fill(letter["matricule"])
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("textbox", name="Email address").fill("claire.hoffmann@example.lu")
    page.get_by_role("button", name="Send the code").click()
    page.get_by_label("Verification code").fill(
        smtp_server.inbox.code(smtp_server.inbox.wait(1)[0])
    )
    page.get_by_role("button", name="Verify").click()
    page.get_by_label("New password").fill("zebra lantern quietly orbit")
    page.get_by_label("Repeat the password").fill("zebra lantern quietly orbit")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Use my card").wait_for()


def type_pin(popup: Any, card: Card) -> None:
    popup.get_by_label("PIN of the card").wait_for()
    if popup.locator("input[name=card]").count() > 1:  # other tests' cards: choose ours
        popup.get_by_label(re.compile(re.escape(card.label))).check()
    popup.get_by_label("PIN of the card").fill(card.user_pin)
    popup.get_by_label("PIN of the card").press("Enter")


def test_closing_the_pin_window_cancels_and_try_again_works(
    browser, provider, card_agent, letter, make_card, smtp_server
) -> None:  # type: ignore[no-untyped-def]
    card: Card = make_card(given_name="Claire", family_name="Hoffmann", user_pin="135790")
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    to_card_step(page, provider["issuer"], letter, smtp_server)

    with page.expect_popup() as popup_info:
        page.get_by_role("button", name="Use my card").click()
    popup = popup_info.value
    popup.get_by_label("PIN of the card").wait_for()
    pin_url = popup.url
    popup.close()  # the person changes their mind
    page.get_by_text("Cancelled").wait_for()
    assert page.get_by_role("button", name="Try again").is_enabled()
    # the page cancelled the agent's request: its PIN page now says it is over
    over = context.new_page()
    over.goto(pin_url)
    over.get_by_text("does not exist or is over").wait_for()
    over.close()

    with page.expect_popup() as popup_info:
        page.get_by_role("button", name="Try again").click()
    type_pin(popup_info.value, card)
    page.get_by_role("heading", name="Your account is active").wait_for(timeout=30000)
    assert "service you use" in page.locator("main").inner_text()
    context.close()


def test_a_blocked_popup_gives_a_link_to_the_pin_page(
    browser, provider, card_agent, letter, make_card, smtp_server
) -> None:  # type: ignore[no-untyped-def]
    card: Card = make_card(given_name="Claire", family_name="Hoffmann", user_pin="975310")
    context = browser.new_context(locale="en-GB")
    context.add_init_script("window.open = function () { return null; };")  # a pop-up blocker
    page = context.new_page()
    to_card_step(page, provider["issuer"], letter, smtp_server)
    page.get_by_role("button", name="Use my card").click()
    link = page.get_by_role("link", name="Open the card agent's window")
    link.wait_for()
    assert link.get_attribute("target") == "_blank"
    with context.expect_page() as opened:
        link.click()
    type_pin(opened.value, card)
    page.get_by_role("heading", name="Your account is active").wait_for(timeout=30000)
    context.close()


def test_the_chosen_language_stays_chosen(browser, provider, letter, smtp_server) -> None:  # type: ignore[no-untyped-def]
    """Started in French (the browser's language, and the flow's); the person picks English on
    the second page: the next pages stay English, reloads included."""
    context = browser.new_context(locale="fr-LU")
    page = context.new_page()
    page.goto(provider["issuer"] + "/activate")
    page.get_by_label("Code d'activation").fill(letter["code"])
    page.get_by_label("Matricule").fill(letter["matricule"])
    page.get_by_role("button", name="Continuer").click()
    page.get_by_role("heading", name="Votre adresse e-mail").wait_for()
    page.get_by_role("link", name="English").click()
    page.get_by_role("heading", name="Your email address").wait_for()
    page.get_by_role("textbox", name="Email address").fill("claire.hoffmann@example.lu")
    page.get_by_role("button", name="Send the code").click()
    page.get_by_role("heading", name="Check your email").wait_for()  # the page was reloaded
    assert "lang=en" in page.url
    page.reload()
    page.get_by_role("heading", name="Check your email").wait_for()
    context.close()
