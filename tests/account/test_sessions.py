"""The account API: who is signed in, the account's sessions, ending them (docs/account.md)."""

from __future__ import annotations

from sqlalchemy import select

from authsvc.audit import service as audit
from authsvc.audit.models import AuditEvent
from authsvc.oidc.claims import ACR_HIGH, ACR_LOW
from authsvc.outbox.models import OutboxMessage
from authsvc.sessions.models import ProviderSession

from ..oidc.conftest import full_sign_in
from .helpers import assert_json_error, csrf, current_sid, end, sessions, sign_in


def test_without_a_session_everything_is_login_required(browser) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    assert_json_error(b.client.get("/api/account"), 401, "login_required")
    assert_json_error(b.client.get("/api/account/sessions"), 401, "login_required")
    assert_json_error(
        b.client.post("/api/account/sessions/abc/end", json={"csrf_token": "x"}),
        401,
        "login_required",
    )
    assert_json_error(
        b.client.post("/api/account/password", json={"csrf_token": "x", "new_password": "y"}),
        401,
        "login_required",
    )
    b.client.set_cookie("authsvc_session", "not-a-session")
    assert_json_error(b.client.get("/api/account"), 401, "login_required")


def test_who_and_the_level_of_a_limited_session(browser, rp, anne) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    body = b.client.get("/api/account").json
    assert body["sub"] == anne.subject
    assert body["name"] == "Anne Muller"
    assert body["matricule"] == anne.matricule
    assert body["email"].endswith("@example.lu")
    assert body["session"]["acr"] == ACR_LOW
    assert body["session"]["level"] == "limited"
    assert body["session"]["amr"] == ["pwd"]
    assert body["session"]["full_until"] is None
    assert body["password_change"] == {"current_password_required": True}
    assert len(body["csrf_token"]) >= 32
    assert b.client.get("/api/account").headers["Cache-Control"] == "no-store"


def test_who_and_the_level_of_a_full_session(browser, rp, anne, revocation_server) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne, method="card")
    body = b.client.get("/api/account").json
    assert body["session"]["acr"] == ACR_HIGH
    assert body["session"]["level"] == "full"
    assert {"sc", "hwk", "pin"} <= set(body["session"]["amr"])
    assert body["session"]["full_until"].endswith("Z")
    assert body["password_change"] == {"current_password_required": False}


def test_the_list_shows_the_accounts_live_sessions_only(
    browser, rp, new_client, anne, jean, services
) -> None:  # type: ignore[no-untyped-def]
    dsp = new_client(name="DSP")
    here = sign_in(browser(), rp, anne)
    sign_in(here, dsp, anne)  # the same session, a second service (SSO)
    elsewhere = sign_in(browser(), rp, anne)
    ended = sign_in(browser(), rp, anne)
    end(ended, current_sid(ended))
    sign_in(browser(), rp, jean)

    listed = sessions(here)
    assert [s["current"] for s in listed] == [True, False]  # this browser first
    mine, other = listed
    assert mine["sid"] == current_sid(here)
    assert other["sid"] == current_sid(elsewhere)
    assert {c["name"] for c in mine["services"]} == {"Shared care record", "DSP"}
    assert [c["name"] for c in other["services"]] == ["Shared care record"]
    assert mine["level"] == "limited" and mine["acr"] == ACR_LOW
    assert mine["methods"] == ["password"] and mine["amr"] == ["pwd"]
    assert mine["ip"] == "127.0.0.1"
    assert mine["user_agent"]  # Werkzeug's test client says who it is
    assert {"created_at", "last_seen_at", "expires_at"} <= set(mine)
    assert mine["created_at"].endswith("Z")
    # the other browser sees the same two, itself first
    assert [s["sid"] for s in sessions(elsewhere)] == [other["sid"], mine["sid"]]


def test_idle_and_expired_sessions_are_not_listed(browser, rp, anne, clock) -> None:  # type: ignore[no-untyped-def]
    idle = sign_in(browser(), rp, anne)
    idle_sid = current_sid(idle)
    clock.advance(hours=1, minutes=30)
    here = sign_in(browser(), rp, anne)
    clock.advance(minutes=45)  # the first one has not been used for 2 h 15
    assert [s["sid"] for s in sessions(here)] == [current_sid(here)]
    assert idle_sid not in [s["sid"] for s in sessions(here)]


def test_ending_another_session_of_mine(browser, rp, anne, tokens, services) -> None:  # type: ignore[no-untyped-def]
    here = sign_in(browser(), rp, anne)
    there = browser()
    token = full_sign_in(there, rp, anne, tokens)
    there_sid = current_sid(there)

    response = end(here, there_sid)
    assert response.status_code == 200
    assert response.json == {"sid": there_sid, "ended": True, "signed_out": False}
    assert "authsvc_session" not in response.headers.get("Set-Cookie", "")
    # that browser is signed out, its tokens are dead; this one goes on
    assert_json_error(there.client.get("/api/account"), 401, "login_required")
    assert tokens.refresh(rp, token["refresh_token"]).json["error"] == "invalid_grant"
    assert tokens.introspect(rp, token["access_token"])["active"] is False
    assert here.client.get("/api/account").status_code == 200
    assert [s["sid"] for s in sessions(here)] == [current_sid(here)]
    # ending it again: it is not a live session any more
    assert_json_error(end(here, there_sid), 404, "session_not_found")
    with services.db.transaction() as db:
        row = db.get(ProviderSession, there_sid)
        assert row.end_reason == "ended from the account page"
        event = db.scalars(
            select(AuditEvent).where(AuditEvent.tag == "session:session:ended")
        ).one()
        assert event.actor == f"account:{anne.account_id}"


def test_ending_a_session_tells_its_relying_services(browser, new_client, anne, services) -> None:  # type: ignore[no-untyped-def]
    dsp = new_client(name="DSP", backchannel_logout_uri="http://127.0.0.1:9/backchannel")
    here = sign_in(browser(), dsp, anne)
    there = sign_in(browser(), dsp, anne)
    assert end(here, current_sid(there)).status_code == 200
    with services.db.transaction() as db:
        kinds = db.scalars(select(OutboxMessage.kind)).all()
    assert kinds == ["backchannel_logout"]


def test_ending_this_session_signs_out(browser, rp, anne, tokens) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    token = full_sign_in(b, rp, anne, tokens)
    response = end(b, current_sid(b))
    assert response.status_code == 200
    assert response.json["signed_out"] is True
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("authsvc_session=;") and "Expires=Thu, 01 Jan 1970" in cookie
    assert b.client.get_cookie("authsvc_session") is None
    assert_json_error(b.client.get("/api/account"), 401, "login_required")
    assert tokens.refresh(rp, token["refresh_token"]).json["error"] == "invalid_grant"


def test_a_session_of_another_account_is_not_found(browser, rp, anne, jean) -> None:  # type: ignore[no-untyped-def]
    mine = sign_in(browser(), rp, anne)
    theirs = sign_in(browser(), rp, jean)
    jean_sid = current_sid(theirs)
    unknown = end(mine, "x" * 32)
    other = end(mine, jean_sid)
    assert_json_error(other, 404, "session_not_found")
    assert other.get_data() == unknown.get_data()  # the same answer: it tells nothing
    assert theirs.client.get("/api/account").status_code == 200  # untouched
    assert jean_sid not in [s["sid"] for s in sessions(mine)]


def test_state_changes_need_the_sessions_csrf_token(browser, rp, anne, services) -> None:  # type: ignore[no-untyped-def]
    here = sign_in(browser(), rp, anne)
    there = sign_in(browser(), rp, anne)
    there_sid = current_sid(there)
    for token in (None, "", "x" * 32, csrf(there), 42, ["a"]):
        response = here.client.post(
            f"/api/account/sessions/{there_sid}/end", json={"csrf_token": token}
        )
        assert_json_error(response, 403, "invalid_csrf_token")
        response = here.client.post(
            "/api/account/password",
            json={"csrf_token": token, "new_password": "an entirely new phrase 7"},
        )
        assert_json_error(response, 403, "invalid_csrf_token")
    assert_json_error(
        here.client.post(f"/api/account/sessions/{there_sid}/end", json={}),
        403,
        "invalid_csrf_token",
    )
    assert there.client.get("/api/account").status_code == 200  # nothing ended


def test_state_changes_need_a_json_body(browser, rp, anne) -> None:  # type: ignore[no-untyped-def]
    here = sign_in(browser(), rp, anne)
    there = sign_in(browser(), rp, anne)
    token = csrf(here)
    url = f"/api/account/sessions/{current_sid(there)}/end"
    # what a cross-site HTML form can send: no
    assert_json_error(here.client.post(url, data={"csrf_token": token}), 400, "invalid_request")
    assert_json_error(
        here.client.post(url, data=f'{{"csrf_token": "{token}"}}', content_type="text/plain"),
        400,
        "invalid_request",
    )
    assert there.client.get("/api/account").status_code == 200


def test_the_csrf_token_follows_the_cookie(browser, rp, anne, tokens, revocation_server) -> None:  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)
    before = csrf(b)
    # a step-up gives the browser a new cookie (no fixation), hence a new token
    full_sign_in(b, rp, anne, tokens, method="card", acr_values=ACR_HIGH)
    after = csrf(b)
    assert before != after
    assert_json_error(end(b, current_sid(b), before), 403, "invalid_csrf_token")
    assert end(b, current_sid(b), after).status_code == 200


def test_the_audit_chain_stays_whole(browser, rp, anne, services) -> None:  # type: ignore[no-untyped-def]
    here = sign_in(browser(), rp, anne)
    there = sign_in(browser(), rp, anne)
    end(here, current_sid(there))
    end(here, current_sid(here))
    with services.db.read_transaction() as db:
        assert audit.verify(db).ok
