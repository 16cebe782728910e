"""Revoking a lost card (PRODUCT "Rules the agency states", INTERFACE §5): from the API and the
CLI, each effect holds — the card signs no one in, refresh tokens are refused, access tokens are
inactive, relying services are told by back-channel, the audit records it — and only staff with
a full session can do it."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select, text

from authsvc.accounts.models import Account, AccountStatus
from authsvc.audit.models import AuditEvent
from authsvc.audit.service import verify
from authsvc.audit.tags import EventTag
from authsvc.cards.models import Card, CardStatus
from authsvc.oidc.claims import ACR_HIGH

from ..oidc.conftest import basic, full_sign_in, pkce
from ..oidc.test_logout import Receiver

pytestmark = pytest.mark.usefixtures("revocation_server")


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    from ..mailserver import free_port

    r = Receiver(free_port())
    r.start()
    yield r
    r.stop()


@pytest.fixture
def dsp(new_client, receiver):  # type: ignore[no-untyped-def]
    return new_client(name="DSP", backchannel_logout_uri=receiver.uri)


@pytest.fixture
def staff_token(services, jean, new_client, browser, tokens) -> str:  # type: ignore[no-untyped-def]
    """An access token with scope helpdesk from Jean's full session; Jean has the role."""
    with services.db.transaction() as db:
        services.helpdesk.grant(db, jean.matricule, "helpdesk", actor="test")
    console = new_client(
        name="Helpdesk tool", scopes=["helpdesk"], redirect_uris=["https://hd.example.test/cb"]
    )
    token = full_sign_in(
        browser(),
        console,
        jean,
        tokens,
        method="card",
        scope="openid helpdesk",
        acr_values=ACR_HIGH,
    )
    return str(token["access_token"])


def signed_in_with_card(browser, person, dsp, tokens) -> tuple[Any, dict[str, Any]]:  # type: ignore[no-untyped-def]
    b = browser()
    return b, full_sign_in(b, dsp, person, tokens, method="card")


def assert_revoked_everywhere(services, person, dsp, tokens, b, token, receiver) -> None:  # type: ignore[no-untyped-def]
    # refresh refused, access token inactive, userinfo refused
    assert tokens.refresh(dsp, token["refresh_token"]).json["error"] == "invalid_grant"
    assert tokens.introspect(dsp, token["access_token"]) == {"active": False}
    assert tokens.userinfo(token["access_token"]).status_code == 401
    # the card signs no one in any more (even though its CA has not revoked it)
    _, challenge = pkce()
    flow_id = b.flow_of(b.authorize(dsp, code_challenge=challenge, code_challenge_method="S256"))
    refused = b.login_card(flow_id, person.card)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_card"
    # the relying service is told
    services.outbox.deliver_due()
    assert len(receiver.tokens) == 1
    # the audit records it, and the chain holds
    with services.db.read_transaction() as db:
        tags = set(db.scalars(select(AuditEvent.tag)))
        assert "helpdesk:card:revoked" in tags
        assert "smartcard:certificate:revoked" in tags
        assert "session:session:ended" in tags
        assert verify(db).ok
        card = db.scalars(select(Card).where(Card.account_id == person.account_id)).one()
        assert card.status == CardStatus.REVOKED


def test_revoke_from_the_api(
    services, anne, dsp, tokens, browser, staff_token, receiver, app
) -> None:  # type: ignore[no-untyped-def]
    b, token = signed_in_with_card(browser, anne, dsp, tokens)
    response = app.test_client().post(
        f"/api/helpdesk/professionals/{anne.matricule}/revoke-card",
        json={"reason": "lost"},
        headers={"Authorization": f"Bearer {staff_token}"},
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert [c["serial"] for c in body["revoked"]] == [anne.card.serial_hex]
    assert body["sessions_ended"] == 1
    assert body["tokens_revoked"] >= 2
    assert_revoked_everywhere(services, anne, dsp, tokens, b, token, receiver)
    with services.db.read_transaction() as db:
        event = db.scalars(
            select(AuditEvent).where(AuditEvent.tag == "helpdesk:card:revoked")
        ).one()
        assert event.actor.startswith("staff:")
        assert event.data["reason"] == "lost"


def test_revoke_from_the_cli(services, anne, dsp, tokens, browser, receiver, cli) -> None:  # type: ignore[no-untyped-def]
    b, token = signed_in_with_card(browser, anne, dsp, tokens)
    result = cli("helpdesk", "revoke-card", anne.matricule, "--reason", "stolen", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json["revoked"][0]["serial"] == anne.card.serial_hex
    assert set(result.json["revoked"][0]) == {"card_id", "serial", "issuer"}
    assert result.json["sessions_ended"] == 1
    assert_revoked_everywhere(services, anne, dsp, tokens, b, token, receiver)
    again = cli("helpdesk", "revoke-card", anne.matricule, "--reason", "stolen", "--json")
    assert again.json == {"revoked": [], "sessions_ended": 0, "tokens_revoked": 0}
    assert cli("audit", "verify", "--json").json["ok"] is True


def test_revocation_ends_a_password_session_stepped_up_with_the_card(
    services, anne, dsp, tokens, browser, cli
) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    limited = full_sign_in(b, dsp, anne, tokens)
    full_sign_in(b, dsp, anne, tokens, method="card", acr_values=ACR_HIGH)
    cli("helpdesk", "revoke-card", anne.matricule, "--reason", "lost")
    assert tokens.refresh(dsp, limited["refresh_token"]).json["error"] == "invalid_grant"


def test_a_new_card_only_through_a_new_letter(services, anne, make_card, cli) -> None:  # type: ignore[no-untyped-def]
    cli("helpdesk", "revoke-card", anne.matricule, "--reason", "lost")
    with services.db.read_transaction() as db:
        account = db.get(Account, anne.account_id)
        assert account.status == AccountStatus.ACTIVE  # the password still gives a limited session
    letter = cli("letters", "issue", anne.matricule, "--json")
    assert letter.exit_code == 0


@pytest.mark.parametrize("who", ["nobody", "limited", "no_role"])
def test_others_are_refused(
    services, anne, jean, new_client, browser, tokens, app, who: str
) -> None:  # type: ignore[no-untyped-def]
    console = new_client(
        name="Helpdesk tool", scopes=["helpdesk"], redirect_uris=["https://hd.example.test/cb"]
    )
    headers = {}
    if who == "limited":  # staff, but a password session
        with services.db.transaction() as db:
            services.helpdesk.grant(db, jean.matricule, "helpdesk", actor="test")
        token = full_sign_in(browser(), console, jean, tokens, scope="openid helpdesk")
        headers = {"Authorization": f"Bearer {token['access_token']}"}
    elif who == "no_role":  # a full session, no role
        token = full_sign_in(
            browser(), console, jean, tokens, method="card", scope="openid helpdesk"
        )
        headers = {"Authorization": f"Bearer {token['access_token']}"}
    client = app.test_client()
    for method, path, body in (
        ("get", "/api/helpdesk/professionals?q=Muller", None),
        ("get", f"/api/helpdesk/professionals/{anne.matricule}", None),
        ("post", f"/api/helpdesk/professionals/{anne.matricule}/revoke-card", {"reason": "lost"}),
        ("post", f"/api/helpdesk/professionals/{anne.matricule}/lock", {}),
        ("post", f"/api/helpdesk/professionals/{anne.matricule}/letters", {}),
        ("get", "/api/helpdesk/audit", None),
    ):
        response = getattr(client, method)(path, json=body, headers=headers)
        assert response.status_code in (401, 403), (who, path, response.status_code)
        assert response.json["error"]
    with services.db.read_transaction() as db:
        assert (
            db.scalars(select(Card).where(Card.account_id == anne.account_id)).one().status
            == "active"
        )


def test_api_actions(services, anne, staff_token, app, tokens, browser, dsp) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    auth = {"Authorization": f"Bearer {staff_token}"}
    found = client.get("/api/helpdesk/professionals?q=muller", headers=auth).json["professionals"]
    assert [p["matricule"] for p in found] == [anne.matricule]
    assert client.get(f"/api/helpdesk/professionals?q={anne.matricule}", headers=auth).json[
        "professionals"
    ]
    token = full_sign_in(browser(), dsp, anne, tokens)
    detail = client.get(f"/api/helpdesk/professionals/{anne.matricule}", headers=auth).json
    assert detail["account"]["status"] == "active"
    assert len(detail["cards"]) == 1
    assert len(detail["sessions"]) == 1
    assert detail["letters"]
    assert any(e["tag"] == "login:attempt:succeeded" for e in detail["events"])
    assert client.post(
        f"/api/helpdesk/professionals/{anne.matricule}/lock", json={"note": "call"}, headers=auth
    ).json == {"status": "locked"}
    assert (
        tokens.refresh(dsp, token["refresh_token"]).json["error"] == "invalid_grant"
    )  # sessions ended
    assert client.post(
        f"/api/helpdesk/professionals/{anne.matricule}/unlock", headers=auth
    ).json == {"status": "active"}
    letter = client.post(f"/api/helpdesk/professionals/{anne.matricule}/letters", headers=auth)
    assert letter.status_code == 201
    assert set(letter.json) == {"letter_id", "activation_code", "expires_at"}
    csv = client.get(
        f"/api/helpdesk/audit?subject=professional:{anne.matricule}&format=csv", headers=auth
    )
    assert csv.mimetype == "text/csv"
    assert "helpdesk:account:locked" in csv.get_data(as_text=True)
    bad = client.post(
        f"/api/helpdesk/professionals/{anne.matricule}/revoke-card",
        json={"reason": "bored"},
        headers=auth,
    )
    assert bad.status_code == 400
    assert client.get("/api/helpdesk/professionals/123", headers=auth).status_code == 400
    assert client.get("/api/helpdesk/audit?since=yesterday", headers=auth).status_code == 400
    for out_of_range in ("since=0001-01-01T00:00%2B01:00", "until=9999-12-31T23:59-01:00"):
        answer = client.get(f"/api/helpdesk/audit?{out_of_range}", headers=auth)
        assert answer.status_code == 400, out_of_range
        assert answer.json["error"] == "invalid_request"


def test_events_name_the_matricule_as_stored_whatever_was_typed(  # type: ignore[no-untyped-def]
    services, anne, staff_token, app, cli
) -> None:
    """A matricule typed with spaces (or other separators) is checked, then recorded as its 13
    digits: the event is found under the professional like every other."""
    client = app.test_client()
    auth = {"Authorization": f"Bearer {staff_token}"}
    spaced = " ".join((anne.matricule[:4], anne.matricule[4:8], anne.matricule[8:]))
    assert client.post(f"/api/helpdesk/professionals/{quote(spaced)}/lock", headers=auth).json == {
        "status": "locked"
    }
    assert cli("helpdesk", "revoke-card", spaced, "--reason", "lost").exit_code == 0
    with services.db.read_transaction() as db:
        subjects = {
            e.subject
            for e in db.scalars(
                select(AuditEvent).where(
                    AuditEvent.tag.in_(
                        [EventTag.HELPDESK_ACCOUNT_LOCKED, EventTag.HELPDESK_CARD_REVOKED]
                    )
                )
            )
        }
    assert subjects == {f"professional:{anne.matricule}"}


def test_departure_from_the_directory_ends_sessions_and_tokens(
    services, anne, jean, dsp, tokens, browser, cli, tmp_path, receiver, clock
) -> None:  # type: ignore[no-untyped-def]
    token = full_sign_in(browser(), dsp, anne, tokens)
    csv = tmp_path / "hpd.csv"
    csv.write_text(
        f"matricule,given_name,family_name,profession,provider_code\n{jean.matricule},Jean,Schmit,nurse,234567-89\n"
    )
    result = cli("directory", "import", str(csv), "--full", "--json")
    assert result.json["left"] == 1
    assert tokens.refresh(dsp, token["refresh_token"]).json["error"] == "invalid_grant"
    assert tokens.introspect(dsp, token["access_token"]) == {"active": False}
    clock.advance(seconds=5)  # the CLI ran on the real clock, a little after the test's frozen one
    services.outbox.deliver_due()
    assert len(receiver.tokens) == 1


@pytest.mark.postgresql_only
def test_revocation_racing_a_card_sign_in(services, anne, dsp, tokens, browser, app) -> None:  # type: ignore[no-untyped-def]
    """Whatever the interleaving, no live session of the card exists afterwards."""
    for round_ in range(10):
        if round_:
            with services.db.transaction() as db:  # a fresh, active card for the next round
                db.execute(text("DELETE FROM revoked_cards"))
                card = db.scalars(select(Card).where(Card.account_id == anne.account_id)).one()
                card.status, card.revoked_at, card.revoked_reason = "active", None, None
        b = browser()
        _, challenge = pkce()
        flow_id = b.flow_of(
            b.authorize(dsp, code_challenge=challenge, code_challenge_method="S256")
        )
        flow = b.client.get(f"/api/login/{flow_id}").json
        from ..card_signing import sign_challenge

        token = sign_challenge(
            b.softhsm,
            anne.card,
            nonce=flow["challenge"]["nonce"],
            origin=flow["challenge"]["origin"],
        )
        barrier = threading.Barrier(2)

        def sign_in() -> None:
            barrier.wait()
            b.client.post(
                f"/api/login/{flow_id}/smartcard",
                json={"csrf_token": flow["csrf_token"], "auth_token": token},
            )

        def revoke() -> None:
            barrier.wait()
            with services.db.transaction() as db:
                services.helpdesk.revoke_cards(db, anne.matricule, reason="lost", actor="test")

        threads = [threading.Thread(target=sign_in), threading.Thread(target=revoke)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with services.db.read_transaction() as db:
            card = db.scalars(select(Card).where(Card.account_id == anne.account_id)).one()
            live = db.execute(
                text(
                    "SELECT count(*) FROM provider_sessions WHERE card_id = :c AND ended_at IS NULL"
                ),
                {"c": card.id.hex if db.get_bind().dialect.name == "sqlite" else card.id},
            ).scalar()
        assert card.status == "revoked"
        assert live == 0, f"round {round_}: a live session of the revoked card"
    _ = basic
