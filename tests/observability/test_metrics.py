"""The metrics move as requests, sign-ins, token issues, outbox messages and card refusals happen;
their labels never carry a path, an id or personal data; ``/metrics`` is the operator's only."""

from __future__ import annotations

import dataclasses
import re
import secrets
import socket
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import update

from authsvc import create_app
from authsvc.accounts.models import Account, AccountStatus
from authsvc.app import Services
from authsvc.login.service import LOCK_AFTER
from authsvc.mail import messages
from authsvc.outbox.models import OutboxMessage
from authsvc.outbox.service import enqueue
from authsvc.security.passwords import CHEAP

from ..card_signing import sign_challenge
from ..oidc.conftest import PASSWORD, full_sign_in, pkce
from .conftest import Scraper, samples

SIGN_INS = "authsvc_sign_ins_total"


def new_flow(b, rp) -> str:  # type: ignore[no-untyped-def]
    _, challenge = pkce()
    return b.flow_of(b.authorize(rp, code_challenge=challenge, code_challenge_method="S256"))


def post_password(b, flow_id: str, matricule: str, password: str):  # type: ignore[no-untyped-def]
    flow = b.client.get(f"/api/login/{flow_id}").json
    return b.client.post(
        f"/api/login/{flow_id}/password",
        json={"csrf_token": flow["csrf_token"], "matricule": matricule, "password": password},
    )


# --- /metrics: the operator's only ---------------------------------------------------------------


def test_metrics_are_off_by_default(settings, services, env) -> None:  # type: ignore[no-untyped-def]
    off = dataclasses.replace(settings, metrics=False)
    svc = Services.from_settings(off, clock=services.clock, argon2=CHEAP)
    try:
        app = create_app(off, TESTING=True, SERVICES=svc, AUTHSVC_OUTBOX_WORKER=False)
        response = app.test_client().get("/metrics")
    finally:
        svc.close()
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    assert b"authsvc_" not in response.data


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": "203.0.113.7"},
        {"Forwarded": "for=203.0.113.7;proto=https"},
        {"X-Real-IP": "203.0.113.7"},
        {"x-forwarded-for": ""},
    ],
)
def test_metrics_refused_through_the_proxy(client, header: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/metrics", headers=header)
    assert response.status_code == 404  # as if there were no such page
    assert response.json["error"] == "not_found"
    assert b"authsvc_" not in response.data


def test_metrics_served_to_a_direct_scrape(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    assert response.headers["Cache-Control"] == "no-store"
    found = samples(response.get_data(as_text=True))
    assert found[("authsvc_database_up", ())] == 1
    assert found[("authsvc_build_info", (("version", "0.1.0"),))] == 1


# --- HTTP requests -------------------------------------------------------------------------------


def test_requests_are_counted_by_rule_and_status_class(scraper: Scraper, client) -> None:  # type: ignore[no-untyped-def]
    flow_id = secrets.token_urlsafe(32)
    for _ in range(3):
        assert client.get(f"/api/login/{flow_id}").status_code == 404
    assert client.get("/healthz").status_code == 200
    secret_path = f"/no/such/page/{secrets.token_hex(8)}"
    assert client.get(secret_path).status_code == 404
    assert client.delete("/healthz").status_code == 405

    rule = "/api/login/<flow_id>"
    assert (
        scraper.moved("authsvc_http_requests_total", endpoint=rule, method="GET", status="4xx") == 3
    )
    assert (
        scraper.moved("authsvc_http_request_duration_seconds_count", endpoint=rule, method="GET")
        == 3
    )
    assert (
        scraper.moved("authsvc_http_request_duration_seconds_sum", endpoint=rule, method="GET") > 0
    )
    assert (
        scraper.moved(
            "authsvc_http_requests_total", endpoint="/healthz", method="GET", status="2xx"
        )
        == 1
    )
    unmatched = {"endpoint": "<unmatched>", "status": "4xx"}
    assert scraper.moved("authsvc_http_requests_total", method="GET", **unmatched) == 1
    assert scraper.moved("authsvc_http_requests_total", method="DELETE", **unmatched) == 1
    assert flow_id not in scraper.text
    assert secret_path not in scraper.text


def test_an_unknown_http_method_is_other(scraper: Scraper, client) -> None:  # type: ignore[no-untyped-def]
    client.open("/healthz", method="BREW")
    assert (
        scraper.moved(
            "authsvc_http_requests_total", endpoint="<unmatched>", method="other", status="4xx"
        )
        == 1
    )
    assert "BREW" not in scraper.text


def test_a_request_is_timed_from_the_middleware_and_counted_untimed_without_it(  # type: ignore[no-untyped-def]
    scraper: Scraper, app
) -> None:
    """The fast path (the outermost middleware) stamps when a request arrived; the application
    below it, called on its own, counts the request and records no made-up duration."""
    from werkzeug.test import EnvironBuilder

    assert app.test_client().get("/healthz").status_code == 200  # through the middleware
    environ = EnvironBuilder(path="/healthz").get_environ()
    body = b"".join(app.wsgi_app.inner(environ, lambda *a: None))  # below it
    assert b'"status"' in body
    labels = {"endpoint": "/healthz", "method": "GET"}
    assert scraper.moved("authsvc_http_requests_total", status="2xx", **labels) == 2
    assert scraper.moved("authsvc_http_request_duration_seconds_count", **labels) == 1
    assert scraper.moved("authsvc_http_request_duration_seconds_sum", **labels) > 0


# --- sign-ins ------------------------------------------------------------------------------------


def test_password_sign_ins_success_and_failure(scraper: Scraper, browser, rp, anne) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    assert post_password(b, new_flow(b, rp), anne.matricule, "wrong").status_code == 400
    assert post_password(b, new_flow(b, rp), "1893120105732", PASSWORD).status_code == 400
    assert post_password(b, new_flow(b, rp), anne.matricule, PASSWORD).status_code == 200
    assert scraper.moved(SIGN_INS, method="password", result="failure") == 2
    assert scraper.moved(SIGN_INS, method="password", result="success") == 1
    assert scraper.moved(SIGN_INS, method="password", result="locked") == 0
    assert scraper.moved(SIGN_INS, method="smartcard", result="success") == 0


def test_a_locked_account_counts_as_locked(scraper: Scraper, browser, rp, anne, services) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    for _ in range(LOCK_AFTER):
        services.login_failures.clear(anne.matricule)  # the back-off aside
        assert post_password(b, new_flow(b, rp), anne.matricule, "wrong").status_code == 400
    services.login_failures.clear(anne.matricule)
    # the right password: refused all the same, the account is locked
    assert post_password(b, new_flow(b, rp), anne.matricule, PASSWORD).status_code == 400
    assert scraper.moved(SIGN_INS, method="password", result="failure") == LOCK_AFTER - 1
    assert scraper.moved(SIGN_INS, method="password", result="locked") == 2  # locking, then locked


def test_the_per_matricule_back_off_counts_as_limited(scraper: Scraper, browser, rp) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    statuses = [
        post_password(b, new_flow(b, rp), "1893120105732", "wrong").status_code for _ in range(5)
    ]
    assert statuses == [400, 400, 400, 400, 429]
    assert scraper.moved(SIGN_INS, method="password", result="failure") == 4
    assert scraper.moved(SIGN_INS, method="password", result="limited") == 1


def test_the_per_ip_limit_counts_as_limited(scraper: Scraper, client) -> None:  # type: ignore[no-untyped-def]
    flow_id = secrets.token_urlsafe(32)
    statuses = [
        client.post(f"/api/login/{flow_id}/smartcard", data=b"not json").status_code
        for _ in range(31)
    ]
    assert statuses[:30] == [400] * 30  # bad requests: not sign-in attempts
    assert statuses[30] == 429  # the per-IP limit: 30 per minute
    assert scraper.moved(SIGN_INS, method="smartcard", result="limited") == 1
    assert scraper.moved(SIGN_INS, method="smartcard", result="failure") == 0


def test_card_sign_ins_and_refusals(  # type: ignore[no-untyped-def]
    scraper: Scraper, browser, rp, anne, jean, services, revocation_server
) -> None:
    b = browser()
    assert b.login_card(new_flow(b, rp), anne.card).status_code == 200

    b = browser()
    flow_id = new_flow(b, rp)
    flow = b.client.get(f"/api/login/{flow_id}").json
    wrong_origin = sign_challenge(
        b.softhsm, anne.card, nonce=flow["challenge"]["nonce"], origin="https://evil.example"
    )
    refused = b.client.post(
        f"/api/login/{flow_id}/smartcard",
        json={"csrf_token": flow["csrf_token"], "auth_token": wrong_origin},
    )
    assert refused.json["error"] == "invalid_card"

    with services.db.transaction() as db:
        db.get(Account, jean.account_id).status = AccountStatus.LOCKED
    b = browser()
    assert b.login_card(new_flow(b, rp), jean.card).json["error"] == "invalid_card"

    assert scraper.moved(SIGN_INS, method="smartcard", result="success") == 1
    assert scraper.moved(SIGN_INS, method="smartcard", result="failure") == 1
    assert scraper.moved(SIGN_INS, method="smartcard", result="locked") == 1
    assert scraper.moved("authsvc_card_refusals_total", reason="bad_signature") == 1
    # the card's CRL was fetched or read from the cache: a good answer either way
    assert scraper.moved("authsvc_revocation_checks_total", source="crl", result="good") == 2


# --- tokens --------------------------------------------------------------------------------------


def test_tokens_issued_by_grant_type(scraper: Scraper, browser, rp, anne, tokens) -> None:  # type: ignore[no-untyped-def]
    issued = full_sign_in(browser(), rp, anne, tokens)
    refreshed = tokens.refresh(rp, issued["refresh_token"])
    assert refreshed.status_code == 200
    assert tokens.refresh(rp, "not-a-refresh-token").status_code == 400
    total = "authsvc_tokens_issued_total"
    assert scraper.moved(total, grant_type="authorization_code") == 1
    assert scraper.moved(total, grant_type="refresh_token") == 1


# --- the outbox and the database -----------------------------------------------------------------


def queue(services: Services, to: str) -> None:
    with services.db.transaction() as session:
        enqueue(
            session,
            "mail",
            messages.verification_code(to=to, name="Anne Muller", code="123456", lang="fr"),
            summary=f"code to {to}",
            sealer=services.sealer,
            clock=services.clock,
        )


def test_outbox_depth_and_age(scraper: Scraper, services: Services, clock) -> None:  # type: ignore[no-untyped-def]
    assert scraper.value("authsvc_outbox_pending_messages", kind="mail") == 0
    assert scraper.value("authsvc_outbox_oldest_pending_age_seconds", kind="mail") == 0
    queue(services, "anne@example.lu")
    clock.advance(seconds=90)
    queue(services, "jean@example.lu")
    queue(services, "marie@example.lu")
    assert scraper.value("authsvc_outbox_pending_messages", kind="mail") == 3
    assert scraper.value("authsvc_outbox_oldest_pending_age_seconds", kind="mail") == 90
    assert scraper.value("authsvc_outbox_pending_messages", kind="backchannel_logout") == 0

    with services.db.transaction() as session:
        first, second, _ = session.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id))
        first.abandoned_at = clock.now()  # given up
        second.attempts = 1  # failed once, waiting for its retry
    assert scraper.value("authsvc_outbox_pending_messages", kind="mail") == 2
    assert scraper.value("authsvc_outbox_retrying_messages", kind="mail") == 1
    assert scraper.value("authsvc_outbox_abandoned_recent_messages", kind="mail") == 1
    assert scraper.value("authsvc_outbox_oldest_pending_age_seconds", kind="mail") == 0
    clock.advance(hours=25)
    assert scraper.value("authsvc_outbox_abandoned_recent_messages", kind="mail") == 0

    with services.db.transaction() as session:
        session.execute(update(OutboxMessage).values(delivered_at=clock.now(), payload=None))
    assert scraper.value("authsvc_outbox_pending_messages", kind="mail") == 0
    assert "anne@example.lu" not in scraper.text


def test_a_database_that_is_down_does_not_fail_the_scrape(settings, clock) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    down = dataclasses.replace(
        settings, database_url=f"postgresql+psycopg://authsvc@127.0.0.1:{port}/authsvc"
    )
    svc = Services.from_settings(down, clock=clock, argon2=CHEAP)
    try:
        app = create_app(down, TESTING=True, SERVICES=svc, AUTHSVC_OUTBOX_WORKER=False)
        started = time.monotonic()
        response = app.test_client().get("/metrics")
        elapsed = time.monotonic() - started
    finally:
        svc.close()
    assert response.status_code == 200
    found = samples(response.get_data(as_text=True))
    assert found[("authsvc_database_up", ())] == 0
    assert not any(name.startswith("authsvc_outbox_") for name, _ in found)
    assert elapsed < 5


@pytest.mark.postgresql_only
def test_a_slow_database_does_not_hold_the_scrape(scraper: Scraper, services: Services) -> None:
    """A table locked by someone else: the scrape's query gives up after its statement timeout."""
    locked, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with services.db.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        up = scraper.value("authsvc_database_up")
        elapsed = time.monotonic() - started
    finally:
        release.set()
        holder.join(30)
    assert up == 0
    assert elapsed < 5
    assert scraper.value("authsvc_database_up") == 1  # and back as soon as the lock is gone


# --- labels: no paths, ids or personal data ------------------------------------------------------


def test_labels_carry_no_path_id_or_personal_data(  # type: ignore[no-untyped-def]
    scraper: Scraper, app, browser, rp, anne, tokens, services
) -> None:
    b = browser()
    issued = full_sign_in(b, rp, anne, tokens)
    tokens.refresh(rp, issued["refresh_token"])
    b.client.get(f"/userinfo?sub={anne.subject}", headers={"X-Request-Id": "req-1"})
    b = browser()
    flow_id = new_flow(b, rp)
    post_password(b, flow_id, anne.matricule, "wrong password")
    b.client.get(f"/login?flow={flow_id}&matricule={anne.matricule}")
    b.client.get(f"/no/such/{anne.matricule}")
    queue(services, "anne.muller@example.lu")
    scraper.scrape()
    text = scraper.text
    assert "/api/login/<flow_id>/password" in text

    secrets_and_ids = [
        anne.matricule,
        anne.subject,
        str(anne.account_id),
        rp.client_id,
        flow_id,
        issued["access_token"][:24],
        issued["refresh_token"][:24],
        "anne.muller@example.lu",
        "Muller",
        "req-1",
    ]
    for value in secrets_and_ids:
        assert value not in text, value

    rules = {rule.rule for rule in app.url_map.iter_rules()} | {"<unmatched>"}
    now = samples(text)
    for (name, pairs), value in now.items():
        if not name.startswith("authsvc_"):
            continue  # prometheus_client's own (python_info, process_*)
        labels = dict(pairs)
        # this process's registry also holds what other tests' apps counted: only what this
        # test moved must be one of this app's rules
        if "endpoint" in labels and value != scraper.before.get((name, pairs)):
            assert labels["endpoint"] in rules, labels
        for label, value in labels.items():
            if label in ("endpoint", "le", "version"):
                continue
            assert re.fullmatch(r"[a-z0-9_]{1,40}|[A-Z]{3,7}", value), (label, value)


def test_outbox_age_follows_the_clock(scraper: Scraper, services: Services, clock) -> None:  # type: ignore[no-untyped-def]
    queue(services, "anne@example.lu")
    clock.advance(minutes=20)
    assert scraper.value("authsvc_outbox_oldest_pending_age_seconds", kind="mail") == 1200
