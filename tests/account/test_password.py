"""Changing the password from the account page (docs/account.md "Changing your password")."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from sqlalchemy import select

from authsvc.accounts.models import Account, AccountStatus
from authsvc.audit import service as audit
from authsvc.audit.models import AuditEvent
from authsvc.login.service import LOCK_AFTER
from authsvc.oidc.claims import ACR_HIGH
from authsvc.outbox.models import OutboxMessage

from ..oidc.conftest import PASSWORD, full_sign_in
from ..oidc.test_login import new_flow, post_password
from .helpers import assert_json_error, change_password, csrf, current_sid, sign_in

NEW = "copper meadow whistles slowly"


def events(services, tag: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with services.db.transaction() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.tag == tag)).all())


def account(services, person) -> Account:  # type: ignore[no-untyped-def]
    with services.db.transaction() as db:
        row = db.get(Account, person.account_id)
        db.expunge(row)
        return row


def can_sign_in(browser, rp, person, password: str) -> bool:  # type: ignore[no-untyped-def]
    b = browser()
    response = post_password(b, new_flow(b, rp), person.matricule, password)
    return bool(response.status_code == 200)


def test_a_limited_session_needs_the_current_password(browser, rp, anne, services) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    assert_json_error(change_password(b, NEW), 400, "current_password_required")
    assert_json_error(change_password(b, NEW, current=""), 400, "current_password_required")
    assert_json_error(
        change_password(b, NEW, current="not my password"), 400, "invalid_current_password"
    )
    assert can_sign_in(browser, rp, anne, PASSWORD)  # unchanged so far (a second session)

    response = change_password(b, NEW, current=PASSWORD)
    assert response.status_code == 200, response.json
    assert response.json == {"changed": True, "sessions_ended": 1}
    assert can_sign_in(browser, rp, anne, NEW)
    assert not can_sign_in(browser, rp, anne, PASSWORD)
    assert b.client.get("/api/account").status_code == 200  # this session goes on
    stored = account(services, anne).password_hash
    assert stored.startswith("$argon2id$")
    (changed,) = events(services, "account:password:changed")
    assert changed.data["verified_by"] == "current_password"
    assert changed.actor == f"account:{anne.account_id}"
    assert PASSWORD not in repr(changed.data) and NEW not in repr(changed.data)


def test_a_full_session_needs_no_current_password(
    browser, rp, anne, services, revocation_server
) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne, method="card")
    response = change_password(b, NEW)
    assert response.status_code == 200, response.json
    assert can_sign_in(browser, rp, anne, NEW)
    (changed,) = events(services, "account:password:changed")
    assert changed.data["verified_by"] == "full_session"


def test_a_full_session_still_checks_a_current_password_it_is_given(
    browser, rp, anne, services, revocation_server
) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne, method="card")
    assert_json_error(change_password(b, NEW, current="wrong"), 400, "invalid_current_password")
    assert account(services, anne).failed_logins == 1


def test_the_full_level_counts_now_not_at_sign_in(
    browser, rp, anne, clock, settings, revocation_server
) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne, method="card")
    for _ in range(settings.full_level_max_age // 3600):  # used every hour: never idle
        clock.advance(hours=1)
        assert b.client.get("/api/account").status_code == 200
    clock.advance(minutes=1)
    assert b.client.get("/api/account").json["session"]["level"] == "limited"
    assert_json_error(change_password(b, NEW), 400, "current_password_required")
    assert change_password(b, NEW, current=PASSWORD).status_code == 200


def test_a_step_up_makes_the_current_password_unneeded(
    browser, rp, anne, tokens, revocation_server
) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    assert_json_error(change_password(b, NEW), 400, "current_password_required")
    full_sign_in(b, rp, anne, tokens, method="card", acr_values=ACR_HIGH)
    assert change_password(b, NEW).status_code == 200


def test_a_weak_new_password_is_refused(browser, rp, anne, services) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    cases = {
        "short one": "too_short",
        "x" * 1025: "too_long",
        f"my number {anne.matricule} ok": "contains_matricule",
        "anne loves her patients": "contains_name",
        "MULLER and the quiet harbour": "contains_name",
        "password1234": "too_guessable",
        "professional.001@example.lu": "too_guessable",  # her email (zxcvbn knows it)
    }
    email = account(services, anne).email
    cases[email] = cases.pop("professional.001@example.lu")
    for password, reason in cases.items():
        response = change_password(b, password, current=PASSWORD)
        assert_json_error(response, 400, "weak_password")
        assert response.json["reason"] == reason, (password, response.json)
        assert password not in response.get_data(as_text=True)  # never echoed back
    assert_json_error(change_password(b, PASSWORD, current=PASSWORD), 400, "same_password")
    assert can_sign_in(browser, rp, anne, PASSWORD)
    assert events(services, "account:password:changed") == []


def test_a_change_ends_the_other_sessions_and_their_tokens(
    browser, rp, new_client, anne, jean, tokens, services
) -> None:  # type: ignore[no-untyped-def]
    dsp = new_client(name="DSP", backchannel_logout_uri="http://127.0.0.1:9/backchannel")
    other = browser()
    other_token = full_sign_in(other, rp, anne, tokens)
    third = browser()
    third_token = full_sign_in(third, dsp, anne, tokens)
    jeans = browser()
    jean_token = full_sign_in(jeans, rp, jean, tokens)
    here = browser()
    here_token = full_sign_in(here, rp, anne, tokens)

    response = change_password(here, NEW, current=PASSWORD)
    assert response.status_code == 200, response.json
    assert response.json["sessions_ended"] == 2
    # the other sessions: ended, their refresh tokens refused, their access tokens inactive
    for b, rp_, token in ((other, rp, other_token), (third, dsp, third_token)):
        assert_json_error(b.client.get("/api/account"), 401, "login_required")
        assert tokens.refresh(rp_, token["refresh_token"]).json["error"] == "invalid_grant"
        assert tokens.introspect(rp_, token["access_token"])["active"] is False
    # this one goes on, with its tokens; another account is untouched
    assert here.client.get("/api/account").status_code == 200
    assert tokens.refresh(rp, here_token["refresh_token"]).status_code == 200
    assert jeans.client.get("/api/account").status_code == 200
    assert tokens.refresh(rp, jean_token["refresh_token"]).status_code == 200
    # the DSP is told by back-channel; the person is told by mail
    with services.db.transaction() as db:
        outbox = db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        assert sorted(m.kind for m in outbox) == ["backchannel_logout", "mail"]
        assert any("password changed" in m.summary for m in outbox)
    ended = events(services, "session:session:ended")
    assert {e.data["reason"] for e in ended} == {"password changed"}
    assert len(ended) == 2
    (changed,) = events(services, "account:password:changed")
    assert changed.data["sessions_ended"] == 2


def test_the_person_is_told_by_mail(browser, rp, anne, services, settings) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    response = b.client.post(
        "/api/account/password",
        json={
            "csrf_token": csrf(b),
            "current_password": PASSWORD,
            "new_password": NEW,
            "lang": "fr",
        },
    )
    assert response.status_code == 200
    assert services.outbox.deliver_due().delivered == 1
    (path,) = Path(settings.mail_dir).glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"] == account(services, anne).email
    assert message["Subject"] == "Votre mot de passe a été changé"
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "Bonjour Anne Muller" in text and "appelez immédiatement le helpdesk" in text
    assert NEW not in path.read_text() and PASSWORD not in path.read_text()


def test_a_wrong_current_password_counts_as_a_failed_sign_in(browser, rp, anne, services) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    guess = "tangerine guess 42"
    statuses = [change_password(b, NEW, current=guess).status_code for _ in range(4)]
    assert statuses == [400, 400, 400, 400]
    assert account(services, anne).failed_logins == 4
    # the same back-off as the sign-in's, per matricule: both places wait now
    limited = change_password(b, NEW, current=PASSWORD)
    assert_json_error(limited, 429, "too_many_requests")
    assert int(limited.headers["Retry-After"]) >= 1
    fresh = browser()
    assert post_password(fresh, new_flow(fresh, rp), anne.matricule, PASSWORD).status_code == 429
    failed = events(services, "login:attempt:failed")
    assert len(failed) == 4
    assert all(e.data["method"] == "password" for e in failed)
    refused = events(services, "account:password:change_refused")
    assert [e.data["failed_logins"] for e in refused] == [1, 2, 3, 4]
    assert guess not in repr([(e.data, e.subject) for e in refused + failed])


def test_a_right_current_password_resets_the_count(browser, rp, anne, services) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    change_password(b, NEW, current="wrong")
    assert account(services, anne).failed_logins == 1
    assert change_password(b, NEW, current=PASSWORD).status_code == 200
    assert account(services, anne).failed_logins == 0


def test_a_right_current_password_ends_the_back_off(browser, rp, anne, services) -> None:  # type: ignore[no-untyped-def]
    """As a right password at sign-in: the failures before it no longer count towards the
    per-matricule back-off (3 are free; the 4th in a row makes the next try wait)."""
    b = sign_in(browser(), rp, anne)
    for _ in range(3):
        change_password(b, NEW, current="wrong")
    assert services.login_failures.wait(anne.matricule) == 0
    assert change_password(b, NEW, current=PASSWORD).status_code == 200
    services.login_failures.hit(anne.matricule)  # one more failure, e.g. a mistyped sign-in
    assert services.login_failures.wait(anne.matricule) == 0


def test_too_many_wrong_current_passwords_lock_the_account(
    browser, rp, anne, tokens, services
) -> None:  # type: ignore[no-untyped-def]
    elsewhere = browser()
    token = full_sign_in(elsewhere, rp, anne, tokens)
    b = sign_in(browser(), rp, anne)
    answers = []
    for _ in range(LOCK_AFTER):
        services.login_failures.clear(anne.matricule)  # the back-off aside: the lock is tested
        answers.append(change_password(b, NEW, current="wrong"))
    assert {a.json["error"] for a in answers[:-1]} == {"invalid_current_password"}
    assert_json_error(answers[-1], 403, "account_locked")
    assert account(services, anne).status == AccountStatus.LOCKED
    # every session of the account ended at once, this one too, with their tokens
    assert_json_error(b.client.get("/api/account"), 401, "login_required")
    assert_json_error(elsewhere.client.get("/api/account"), 401, "login_required")
    assert tokens.refresh(rp, token["refresh_token"]).json["error"] == "invalid_grant"
    assert {e.data["reason"] for e in events(services, "session:session:ended")} == {
        "account locked"
    }
    assert len(events(services, "account:account:locked")) == 1
    services.login_failures.clear(anne.matricule)
    assert not can_sign_in(browser, rp, anne, PASSWORD)


def test_the_password_endpoint_has_a_per_ip_limit(browser, rp, anne) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    body = {"csrf_token": "forged", "new_password": NEW}
    statuses = [b.client.post("/api/account/password", json=body).status_code for _ in range(21)]
    assert statuses[:20] == [403] * 20
    limited = b.client.post("/api/account/password", json=body)
    assert_json_error(limited, 429, "too_many_requests")
    assert int(limited.headers["Retry-After"]) >= 1


def test_a_change_and_its_events_keep_the_audit_chain_whole(browser, rp, anne, services) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    sign_in(browser(), rp, anne)
    change_password(b, NEW, current="wrong")
    change_password(b, NEW, current=PASSWORD)
    with services.db.read_transaction() as db:
        assert audit.verify(db).ok
    assert current_sid(b)
