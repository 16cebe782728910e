"""The sign-in API (INTERFACE §4 "Sign-in") and its protections (SECURITY "Guessing and
enumeration")."""

from __future__ import annotations

from sqlalchemy import select

from authsvc.accounts.models import Account, AccountStatus
from authsvc.audit.models import AuditEvent
from authsvc.login.service import LOCK_AFTER

from .conftest import PASSWORD, pkce


def new_flow(b, rp) -> str:  # type: ignore[no-untyped-def]
    _, challenge = pkce()
    return b.flow_of(b.authorize(rp, code_challenge=challenge, code_challenge_method="S256"))


def post_password(b, flow_id: str, matricule: str, password: str):  # type: ignore[no-untyped-def]
    flow = b.client.get(f"/api/login/{flow_id}").json
    return b.client.post(
        f"/api/login/{flow_id}/password",
        json={"csrf_token": flow["csrf_token"], "matricule": matricule, "password": password},
    )


def test_flow_view(browser, rp) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    flow_id = new_flow(b, rp)
    body = b.client.get(f"/api/login/{flow_id}").json
    assert set(body) == {"flow_id", "csrf_token", "required_acr", "methods", "challenge"}
    assert body["methods"] == ["password", "smartcard"]
    assert len(flow_id) >= 22
    page = b.client.get(f"/login?flow={flow_id}")
    assert page.status_code == 200
    assert b'autocomplete="current-password"' in page.data


def test_same_answer_for_unknown_wrong_and_inactive(browser, rp, anne, jean, services) -> None:  # type: ignore[no-untyped-def]
    with services.db.transaction() as db:
        db.get(Account, jean.account_id).status = AccountStatus.LOCKED
    b = browser()
    answers = [
        post_password(b, new_flow(b, rp), "1893120105732", PASSWORD),  # unknown matricule
        post_password(b, new_flow(b, rp), anne.matricule, "wrong password here"),  # wrong password
        post_password(b, new_flow(b, rp), jean.matricule, PASSWORD),  # right password, locked
        post_password(b, new_flow(b, rp), "not a matricule", PASSWORD),
    ]
    bodies = {(r.status_code, r.get_data(as_text=True)) for r in answers}
    assert len(bodies) == 1, bodies
    status, _ = bodies.pop()
    assert status == 400
    assert answers[0].json["error"] == "invalid_credentials"


def test_back_off_per_matricule_known_or_not(browser, rp, anne) -> None:  # type: ignore[no-untyped-def]
    for matricule in (anne.matricule, "1893120105732"):
        b = browser()
        statuses = [
            post_password(b, new_flow(b, rp), matricule, "wrong").status_code for _ in range(5)
        ]
        # three free tries, then each failure imposes a growing wait (2 s, 4 s, 8 s …)
        assert statuses == [400, 400, 400, 400, 429]
        limited = post_password(b, new_flow(b, rp), matricule, PASSWORD)
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1


def test_account_locks_after_repeated_failures(browser, rp, anne, services, clock) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    for _ in range(LOCK_AFTER):
        services.login_failures.clear(
            anne.matricule
        )  # the back-off aside: the lock is what we test
        assert post_password(b, new_flow(b, rp), anne.matricule, "wrong").status_code == 400
    services.login_failures.clear(anne.matricule)
    locked = post_password(b, new_flow(b, rp), anne.matricule, PASSWORD)
    assert locked.json["error"] == "invalid_credentials"  # the right password no longer works
    with services.db.transaction() as db:
        assert db.get(Account, anne.account_id).status == AccountStatus.LOCKED
        tags = db.scalars(select(AuditEvent.tag)).all()
        assert "account:account:locked" in tags
        assert "login:attempt:failed" in tags


def test_success_resets_the_count_and_is_audited(browser, rp, anne, services) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    post_password(b, new_flow(b, rp), anne.matricule, "wrong")
    ok = post_password(b, new_flow(b, rp), anne.matricule, PASSWORD)
    assert ok.status_code == 200
    assert ok.json["redirect_to"].startswith("http://127.0.0.1:5000/authorize?")
    cookie = ok.headers["Set-Cookie"]
    assert "authsvc_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    with services.db.transaction() as db:
        assert db.get(Account, anne.account_id).failed_logins == 0
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.tag == "login:attempt:succeeded")
        ).all()
        assert events
        assert PASSWORD not in repr([e.data for e in events])


def test_csrf_and_cookie_binding(browser, rp, anne, app) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    flow_id = new_flow(b, rp)
    csrf = b.client.get(f"/api/login/{flow_id}").json["csrf_token"]
    wrong = b.client.post(
        f"/api/login/{flow_id}/password",
        json={"csrf_token": "x", "matricule": anne.matricule, "password": PASSWORD},
    )
    assert wrong.status_code == 403
    stranger = app.test_client()
    response = stranger.post(
        f"/api/login/{flow_id}/password",
        json={"csrf_token": csrf, "matricule": anne.matricule, "password": PASSWORD},
    )
    assert response.status_code == 404
    assert response.json["error"] == "flow_not_found"


def test_flow_expires(browser, rp, anne, clock) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    flow_id = new_flow(b, rp)
    clock.advance(minutes=16)
    response = b.client.get(f"/api/login/{flow_id}")
    assert response.status_code == 410
    assert response.json["error"] == "flow_expired"


def test_card_not_bound_is_refused(browser, rp, make_card, revocation_server) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    flow_id = new_flow(b, rp)
    response = b.login_card(flow_id, make_card(given_name="Nobody", family_name="Known"))
    assert response.status_code == 400
    assert response.json["error"] == "invalid_card"


def test_card_with_a_wrong_signature_is_refused(browser, rp, anne, revocation_server) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    flow_id = new_flow(b, rp)
    flow = b.client.get(f"/api/login/{flow_id}").json
    from ..card_signing import sign_challenge

    token = sign_challenge(
        b.softhsm, anne.card, nonce=flow["challenge"]["nonce"], origin="https://evil.example"
    )
    response = b.client.post(
        f"/api/login/{flow_id}/smartcard",
        json={"csrf_token": flow["csrf_token"], "auth_token": token},
    )
    assert response.status_code == 400
    assert response.json["error"] == "invalid_card"


def test_bad_input_is_a_4xx_json(browser, rp) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    flow_id = new_flow(b, rp)
    for path in ("password", "smartcard"):
        for body in (b"not json", b"[]", b'{"csrf_token": 1}', b"\xff"):
            response = b.client.post(
                f"/api/login/{flow_id}/{path}", data=body, content_type="application/json"
            )
            assert 400 <= response.status_code < 500, (path, body)
            assert response.json["error"]
    assert b.client.get("/api/login/unknown").status_code == 404
    assert b.client.get("/login?flow=unknown").status_code == 404
