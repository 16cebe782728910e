"""The activation flows API (INTERFACE §4 "Activation"): every transition and every error code."""

from __future__ import annotations

import re
import threading

import pytest
from sqlalchemy import select, text

from authsvc.accounts.models import Account, AccountStatus
from authsvc.activation.models import ActivationLetter
from authsvc.audit.models import AuditEvent
from authsvc.audit.service import verify
from authsvc.cards.models import Card

from .conftest import ANNE, GOOD_PASSWORD, JEAN


def test_the_whole_journey(activation, letter, make_card, revocation_server, services, db) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    started = a.start(letter.code, letter.matricule)
    assert started.status_code == 201
    body = started.json
    assert set(body) == {"flow_id", "csrf_token", "state", "expires_at"}
    assert body["state"] == "email_required"
    assert len(body["flow_id"]) >= 22  # ≥ 128 bits, URL-safe
    assert body["expires_at"].endswith("Z")
    cookie = started.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie

    assert a.get().json["state"] == "email_required"
    assert a.post("email", email="Anne.Muller@Example.LU").json == {
        "state": "email_verification_required"
    }
    assert a.get().json["email"] == "Anne.Muller@example.lu"
    assert a.post("email/verify", code=a.mailed_code()).json == {"state": "password_required"}

    response = a.post("password", password=GOOD_PASSWORD)
    assert response.status_code == 200
    assert response.json["state"] == "smartcard_required"
    challenge = response.json["challenge"]
    assert set(challenge) == {"nonce", "origin", "expires_at"}
    assert challenge["origin"] == services.settings.issuer_origin

    card = make_card(given_name="Anne", family_name="Muller")
    done = a.post("smartcard", auth_token=a.token(card, challenge))
    assert done.status_code == 200, done.json
    assert done.json["state"] == "active"
    sub = done.json["sub"]

    with db.transaction() as s:
        account = s.scalars(select(Account)).one()
        assert account.status == AccountStatus.ACTIVE
        assert account.subject == sub
        assert account.email == "Anne.Muller@example.lu"
        assert account.password_hash and account.password_hash.startswith("$argon2id$")
        assert services.passwords.verify(account.password_hash, GOOD_PASSWORD)
        (bound,) = s.scalars(select(Card)).all()
        assert bound.account_id == account.id
        assert bound.serial == card.serial_hex
        assert s.scalars(select(ActivationLetter)).one().used_at is not None
        tags = list(s.scalars(select(AuditEvent.tag).order_by(AuditEvent.seq)))
        assert "activation:flow:completed" in tags
        assert verify(s).ok
    # the "account activated" mail
    services.outbox.deliver_due()
    mails = sorted(services.settings.mail_dir.glob("*.eml"))
    assert any("activ" in m.read_text().lower() and card.serial_hex in m.read_text() for m in mails)
    # the flow is done: its state says so, the letter cannot start again
    assert a.get().json["state"] == "active"
    again = activation().start(letter.code, letter.matricule)
    assert again.status_code == 400
    assert again.json["error"] == "invalid_activation"


# --- the first step: one answer for every wrong pair ---------------------------------------------


def test_same_answer_for_every_wrong_pair(activation, issue_letter, services, clock) -> None:  # type: ignore[no-untyped-def]
    anne = issue_letter(ANNE)
    jean_old = issue_letter(JEAN)
    jean = issue_letter(JEAN)  # supersedes jean_old
    answers = {
        "wrong matricule": activation().start(anne.code, JEAN),
        "unknown matricule": activation().start(anne.code, "1893120105732"),
        "malformed matricule": activation().start(anne.code, "12345"),
        "wrong code": activation().start("AAAA-BBBB-CCCC-DDDD", ANNE),
        "superseded letter": activation().start(jean_old.code, JEAN),
    }
    clock.advance(days=91)
    answers["expired letter"] = activation().start(jean.code, JEAN)
    bodies = {name: (r.status_code, r.json) for name, r in answers.items()}
    first = next(iter(bodies.values()))
    assert first[0] == 400
    assert first[1]["error"] == "invalid_activation"
    assert all(b == first for b in bodies.values()), bodies


def test_used_letter_gives_the_same_answer(activation, letter, card_for, revocation_server) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    challenge = a.to_smartcard(letter)
    assert a.post("smartcard", auth_token=a.token(card_for(ANNE), challenge)).status_code == 200
    used = activation().start(letter.code, letter.matricule)
    wrong = activation().start("AAAA-BBBB-CCCC-DDDD", letter.matricule)
    assert (used.status_code, used.json) == (wrong.status_code, wrong.json)


def test_code_is_typed_in_any_case_with_any_separators(activation, letter) -> None:  # type: ignore[no-untyped-def]
    typed = letter.code.lower().replace("-", " ")
    assert (
        activation()
        .start(typed, " ".join([letter.matricule[:4], letter.matricule[4:]]))
        .status_code
        == 201
    )


def test_letter_is_locked_after_five_wrong_codes(activation, letter, db) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        assert (
            activation().start("AAAA-BBBB-CCCC-DDDD", letter.matricule).json["error"]
            == "invalid_activation"
        )
    locked = activation().start(letter.code, letter.matricule)
    assert locked.status_code == 400
    assert locked.json["error"] == "invalid_activation"
    with db.transaction() as s:
        assert s.scalars(select(ActivationLetter.failed_attempts)).one() == 5
        assert "activation:letter:locked" in s.scalars(select(AuditEvent.tag)).all()


def test_new_letter_after_a_lock_works(activation, issue_letter) -> None:  # type: ignore[no-untyped-def]
    old = issue_letter(ANNE)
    for _ in range(5):
        activation().start("AAAA-BBBB-CCCC-DDDD", ANNE)
    new = issue_letter(ANNE)
    assert activation().start(new.code, ANNE).status_code == 201
    assert activation().start(old.code, ANNE).status_code == 400


def test_a_professional_who_left_cannot_activate(activation, letter, services) -> None:  # type: ignore[no-untyped-def]
    from authsvc.directory.importer import import_directory

    with services.db.transaction() as s:
        import_directory(
            s,
            f"matricule,given_name,family_name,profession,provider_code\n{JEAN},J,S,nurse,1\n".encode(),
            full=True,
            force=True,
            actor="test",
            clock=services.clock,
        )
        assert s.scalars(select(Account)).one().status == AccountStatus.SUSPENDED
    assert activation().start(letter.code, letter.matricule).json["error"] == "invalid_activation"


def test_listed_again_a_suspended_account_is_reactivated(
    activation, issue_letter, card_for, revocation_server, services
) -> None:  # type: ignore[no-untyped-def]
    from authsvc.directory.importer import import_directory

    header = "matricule,given_name,family_name,profession,provider_code\n"
    issue_letter(ANNE)
    with services.db.transaction() as s:  # Anne leaves: her account is suspended
        import_directory(s, f"{header}{JEAN},J,S,nurse,1\n".encode(), full=True, actor="t")
        assert s.scalars(select(Account)).one().status == AccountStatus.SUSPENDED
    with services.db.transaction() as s:  # and comes back
        import_directory(s, f"{header}{ANNE},Anne,Muller,doctor,1\n".encode(), actor="t")
    letter = issue_letter(ANNE)
    a = activation()
    challenge = a.to_smartcard(letter)
    assert a.post("smartcard", auth_token=a.token(card_for(ANNE), challenge)).status_code == 200
    with services.db.transaction() as s:
        assert s.scalars(select(Account)).one().status == AccountStatus.ACTIVE


# --- the flow belongs to the browser that started it ---------------------------------------------


def test_flow_is_bound_to_its_cookie(activation, letter, app) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    stranger = app.test_client()  # another browser: no cookie
    assert stranger.get(a.url).status_code == 404
    assert stranger.get(a.url).json["error"] == "flow_not_found"
    response = stranger.post(
        f"{a.url}/email", json={"csrf_token": a.flow["csrf_token"], "email": "x@example.lu"}
    )
    assert response.status_code == 404
    stranger.set_cookie("authsvc_activation", "forged", domain="localhost")
    assert stranger.get(a.url).status_code == 404


def test_unknown_flow(activation) -> None:  # type: ignore[no-untyped-def]
    response = activation().client.get("/api/activation/" + "x" * 43)
    assert response.status_code == 404
    assert response.json["error"] == "flow_not_found"


def test_csrf_token_is_required(activation, letter) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    for token in ("wrong", None, 42):
        response = a.post("email", email="anne@example.lu", csrf_token=token)
        assert response.status_code == 403
        assert response.json["error"] == "invalid_csrf_token"
    assert a.get().json["state"] == "email_required"


def test_flow_expires(activation, letter, clock) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    clock.advance(hours=1, seconds=1)
    response = a.post("email", email="anne@example.lu")
    assert response.status_code == 410
    assert response.json["error"] == "flow_expired"


def test_steps_out_of_order_are_refused(activation, letter) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    for step, body in [
        ("email/verify", {"code": "123456"}),
        ("password", {"password": GOOD_PASSWORD}),
        ("smartcard", {"auth_token": {}}),
    ]:
        response = a.post(step, **body)
        assert response.status_code == 409, step
        assert response.json["error"] == "invalid_state"


# --- email -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["not an address", "anne@", "@example.lu", "anne@localhost"])
def test_invalid_email(activation, letter, address: str) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    response = a.post("email", email=address)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_email"


def test_wrong_email_code_then_the_right_one(activation, letter) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    a.post("email", email="anne@example.lu")
    code = a.mailed_code()
    wrong = "000000" if code != "000000" else "111111"
    response = a.post("email/verify", code=wrong)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_code"
    assert "4 tries left" in response.json["error_description"]
    assert a.post("email/verify", code=code).json["state"] == "password_required"


def test_email_code_five_tries_then_a_new_code(activation, letter, clock) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    a.post("email", email="anne@example.lu")
    code = a.mailed_code()
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        assert a.post("email/verify", code=wrong).json["error"] == "invalid_code"
    exhausted = a.post("email/verify", code=code)
    assert exhausted.json["error"] == "invalid_code"
    assert exhausted.json["reason"] == "code_expired"
    clock.advance(seconds=31)
    assert a.post("email", email="anne@example.lu").status_code == 200
    assert a.post("email/verify", code=a.mailed_code()).json["state"] == "password_required"


def test_email_code_expires_after_ten_minutes(activation, letter, clock) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    a.post("email", email="anne@example.lu")
    code = a.mailed_code()
    clock.advance(minutes=10, seconds=1)
    response = a.post("email/verify", code=code)
    assert response.json["error"] == "invalid_code"
    assert response.json["reason"] == "code_expired"


def test_sending_is_rate_limited(activation, letter, clock) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    assert a.post("email", email="anne@example.lu").status_code == 200
    again = a.post("email", email="anne@example.lu")
    assert again.status_code == 429
    assert again.json["error"] == "too_many_requests"
    assert 1 <= int(again.headers["Retry-After"]) <= 30
    for _ in range(4):
        clock.advance(seconds=31)
        assert a.post("email", email="anne@example.lu").status_code == 200
    clock.advance(seconds=31)
    assert a.post("email", email="anne@example.lu").status_code == 429  # 5 codes per flow


def test_the_old_code_stops_working_when_a_new_one_is_sent(activation, letter, clock) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    a.post("email", email="anne@example.lu")
    first = a.mailed_code()
    clock.advance(seconds=31)
    a.post("email", email="anne@example.lu")
    second = a.mailed_code()
    if first != second:
        assert a.post("email/verify", code=first).json["error"] == "invalid_code"
    assert a.post("email/verify", code=second).json["state"] == "password_required"


# --- password --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "too_short"),
        ("password1234", "too_guessable"),
        ("qwertyuiop123", "too_guessable"),
        (f"x{ANNE}y", "contains_matricule"),
        ("Anne-is-my-name-2024", "contains_name"),
        ("mullerandmore!!", "contains_name"),
    ],
)
def test_weak_passwords(activation, letter, password: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.to_password(letter)
    response = a.post("password", password=password)
    assert response.status_code == 400
    assert response.json["error"] == "weak_password"
    assert response.json["reason"] == reason
    assert a.get().json["state"] == "password_required"


def test_password_can_be_chosen_again_before_the_card(activation, letter) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.to_smartcard(letter)
    again = a.post("password", password="another lantern quietly orbit")
    assert again.status_code == 200
    assert again.json["state"] == "smartcard_required"


# --- smartcard -------------------------------------------------------------------------------------


def test_refused_card_and_replayed_challenge(
    activation, letter, card_for, revocation_server
) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    challenge = a.to_smartcard(letter)
    card = card_for(ANNE)
    token = a.token(card, challenge)
    # a token over another origin is refused, and burns the challenge
    bad = a.post(
        "smartcard", auth_token=a.token(card, {**challenge, "origin": "https://evil.example"})
    )
    assert bad.status_code == 400
    assert bad.json["error"] == "invalid_card"
    replay = a.post("smartcard", auth_token=token)
    assert replay.status_code == 400
    assert replay.json["error"] == "invalid_card"
    # a fresh challenge from GET, and it works
    fresh = a.get().json["challenge"]
    assert fresh["nonce"] != challenge["nonce"]
    assert a.post("smartcard", auth_token=a.token(card, fresh)).status_code == 200


def test_garbage_tokens_are_invalid_card(activation, letter, revocation_server) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.to_smartcard(letter)
    for token in (
        {},
        {
            "unverifiedCertificate": "!!",
            "algorithm": "ES256",
            "signature": "AA==",
            "format": "web-eid:1.0",
        },
        {
            "unverifiedCertificate": "AAAA",
            "algorithm": "none",
            "signature": "AA==",
            "format": "web-eid:1.0",
        },
    ):
        a.get()  # a new challenge each time
        response = a.post("smartcard", auth_token=token)
        assert response.status_code == 400
        assert response.json["error"] == "invalid_card"


def test_card_bound_to_another_account_is_refused(
    activation, issue_letter, card_for, revocation_server
) -> None:  # type: ignore[no-untyped-def]
    """Anne's card, presented again for Jean: "bound to another account" is what is said (it
    is checked before the holder, which is not Jean either)."""
    card = card_for(ANNE)
    anne, jean = activation(), activation()
    challenge = anne.to_smartcard(issue_letter(ANNE))
    assert anne.post("smartcard", auth_token=anne.token(card, challenge)).status_code == 200
    challenge = jean.to_smartcard(issue_letter(JEAN))
    response = jean.post("smartcard", auth_token=jean.token(card, challenge))
    assert response.status_code == 400
    assert response.json["error"] == "invalid_card"
    assert "another account" in response.json["error_description"]
    assert response.json["reason"] == "card_bound_elsewhere"
    assert "(reason: card_bound_elsewhere)" in response.json["error_description"]


def test_revoked_card_is_refused(activation, letter, card_for, test_ca, revocation_server) -> None:  # type: ignore[no-untyped-def]
    card = card_for(ANNE)
    test_ca.revoke(card.serial)
    a = activation()
    challenge = a.to_smartcard(letter)
    response = a.post("smartcard", auth_token=a.token(card, challenge))
    assert response.status_code == 400
    assert response.json["error"] == "invalid_card"
    assert response.json["error_description"].endswith("(reason: revoked_crl)")


@pytest.mark.postgresql_only
def test_two_concurrent_completions_of_one_letter(
    activation, issue_letter, card_for, revocation_server, db
) -> None:  # type: ignore[no-untyped-def]
    """Two browsers took one letter to the smartcard step and present a card at the same instant:
    exactly one wins, whatever the interleaving (run several times)."""
    for attempt in range(5):
        number = ANNE if attempt % 2 == 0 else JEAN
        letter = issue_letter(number)
        first, second = activation(), activation()
        c1, c2 = first.to_smartcard(letter), second.to_smartcard(letter)
        t1, t2 = first.token(card_for(number), c1), second.token(card_for(number), c2)
        barrier = threading.Barrier(2)
        results: list[int] = []

        def complete(a, token) -> None:  # type: ignore[no-untyped-def]
            barrier.wait()
            results.append(a.post("smartcard", auth_token=token).status_code)

        threads = [
            threading.Thread(target=complete, args=(first, t1)),
            threading.Thread(target=complete, args=(second, t2)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [200, 409], results
        with db.transaction() as s:
            used = s.execute(
                text("SELECT count(*) FROM activation_letters WHERE used_at IS NOT NULL")
            )
            assert used.scalar() == attempt + 1
            assert s.execute(text("SELECT count(*) FROM cards")).scalar() == attempt + 1


def _database_text(db) -> list[str]:  # type: ignore[no-untyped-def]
    """Every text value of every row of every table (bytes as latin-1; no timestamps)."""
    import json as _json

    from authsvc.db import Base

    values: list[str] = []
    with db.transaction() as s:
        for table in Base.metadata.sorted_tables:
            for row in s.execute(table.select()):
                for value in row:
                    if isinstance(value, str):
                        values.append(value)
                    elif isinstance(value, bytes):
                        values.append(value.decode("latin-1"))
                    elif isinstance(value, dict | list):
                        values.append(_json.dumps(value, ensure_ascii=False))
    return values


def _mail_text(raw: bytes) -> str:
    """A mail's headers and every decoded text part."""
    import email
    import email.policy

    mail = email.message_from_bytes(raw, policy=email.policy.default)
    parts = [str(value) for value in mail.values()]
    for part in mail.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_content())  # type: ignore[attr-defined]
    return "\n".join(parts)


def _contains_token(texts: list[str], secret: str) -> bool:
    """``secret`` appears as a whole token (not inside a longer run of letters and digits: a
    6-digit code could otherwise be found by chance inside a hex hash or base64)."""
    pattern = re.compile(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])")
    return any(pattern.search(text) for text in texts)


def test_secrets_appear_nowhere_but_in_the_delivered_mail(
    activation, letter, card_for, revocation_server, db, services, authsvc_log
) -> None:  # type: ignore[no-untyped-def]
    """The email code, the password and the letter's code are in no table (audit trail, outbox,
    flows, accounts …) and in no log line; the code is in the mail that was delivered, and only
    there."""
    from authsvc.outbox.models import OutboxMessage

    from ..conftest import log_text

    a = activation()
    assert a.start(letter.code, letter.matricule).status_code == 201
    assert a.post("email", email="anne.muller@example.lu").status_code == 200
    with db.transaction() as s:  # queued, not yet delivered: sealed
        (queued,) = s.scalars(select(OutboxMessage)).all()
        assert queued.payload is not None and b"Verification code" not in queued.payload
    code = a.mailed_code()  # delivers it
    assert a.post("email/verify", code=code).status_code == 200
    challenge = a.post("password", password=GOOD_PASSWORD).json["challenge"]
    done = a.post("smartcard", auth_token=a.token(card_for(ANNE), challenge))
    assert done.status_code == 200, done.json
    services.outbox.deliver_due()

    stored = _database_text(db)
    logged = [log_text(authsvc_log)]
    assert any("activation:flow:completed" in value for value in stored)  # the dump is real
    for secret in (code, GOOD_PASSWORD, letter.code, letter.code.replace("-", "")):
        assert not _contains_token(stored, secret), secret
        assert not _contains_token(logged, secret), secret
    with db.transaction() as s:  # delivered: nothing of the content stays behind
        assert all(m.payload is None for m in s.scalars(select(OutboxMessage)))
    mails = [_mail_text(f.read_bytes()) for f in services.settings.mail_dir.glob("*.eml")]
    assert len(mails) == 2  # the code, then "your account is active"
    assert sum(_contains_token([m], code) for m in mails) == 1
    assert not _contains_token(mails, GOOD_PASSWORD)
    assert not _contains_token(mails, letter.code)
