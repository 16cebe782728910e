"""`authsvc card-agent` end to end: a real subprocess, real SoftHSM2 cards, plain HTTP.

Each test drives the agent as the provider's page (``fetch()`` with the page's ``Origin``) and as
the person on the agent's PIN page would, and checks the Web eID token with `cryptography`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import pytest
from cryptography.exceptions import InvalidSignature

from softhsm.testca import Card, SoftHSM, key_usage

from .conftest import TRUSTED, RunningAgent, new_nonce
from .webeid import verify_token

ALGORITHMS = {"ec": "ES256", "ec-p384": "ES384", "ec-p521": "ES512", "rsa": "RS256"}


# --- status ---------------------------------------------------------------------------------------


def test_status_lists_the_card(agent: RunningAgent, issue: Callable[..., Card]) -> None:
    card = issue(given_name="Jean", family_name="Weber")
    reply = agent.status()
    assert reply.status == 200
    assert reply.header("Access-Control-Allow-Origin") == TRUSTED
    assert "Origin" in (reply.header("Vary") or "")
    body = reply.json
    assert body["agent"] == "authsvc-card-agent"
    assert body["protocol"] == 1
    assert [(c["label"], c["holder"]) for c in body["cards"]] == [(card.label, "Jean Weber")]


def test_status_without_a_card_is_an_empty_list(agent: RunningAgent) -> None:
    reply = agent.status()
    assert reply.status == 200
    assert reply.json["cards"] == []


def test_a_card_inserted_while_the_agent_runs_is_seen(
    agent: RunningAgent, issue: Callable[..., Card], cards: SoftHSM
) -> None:
    assert agent.status().json["cards"] == []
    card = issue()
    assert [c["label"] for c in agent.status().json["cards"]] == [card.label]
    cards.delete_token(card.label)  # pulled out
    assert agent.status().json["cards"] == []


def test_a_signature_only_certificate_is_not_offered(
    agent: RunningAgent, issue: Callable[..., Card]
) -> None:
    issue(usage=key_usage(content_commitment=True))  # a qualified-signature certificate
    assert agent.status().json["cards"] == []


# --- signing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec", "ec-p384", "ec-p521", "rsa"])
def test_trusted_origin_gets_a_token_that_verifies(
    agent: RunningAgent, issue: Callable[..., Card], key_type: str
) -> None:
    card = issue(key_type=key_type)
    nonce = new_nonce()
    token = agent.sign_in(nonce, card.user_pin)
    assert token["algorithm"] == ALGORITHMS[key_type]
    certificate = verify_token(token, TRUSTED, nonce)
    assert certificate == card.certificate
    # bound to that origin and that nonce: not valid for any other
    with pytest.raises(InvalidSignature):
        verify_token(token, "https://evil.example", nonce)
    with pytest.raises(InvalidSignature):
        verify_token(token, TRUSTED, new_nonce())


def test_the_signed_origin_is_the_origin_header_never_a_body_field(
    start_agent: Callable[..., RunningAgent], issue: Callable[..., Card]
) -> None:
    other = "https://auth.esante.example"
    agent = start_agent("--trust-origin", TRUSTED, "--trust-origin", other)
    card = issue()
    nonce = new_nonce()
    started = agent.request(
        "POST",
        "/v1/authenticate",
        origin=other,
        json_body={"nonce": nonce, "origin": TRUSTED},
    )
    assert started.status == 202
    request_id = started.json["request_id"]
    page = agent.pin_page(request_id)
    assert other in page.reply.text  # the person sees who asks
    agent.submit(request_id, page, pin=card.user_pin)
    token = agent.result(request_id, origin=other).json["auth_token"]
    verify_token(token, other, nonce)
    with pytest.raises(InvalidSignature):
        verify_token(token, TRUSTED, nonce)


def test_the_result_goes_only_to_the_origin_that_asked_and_only_once(
    start_agent: Callable[..., RunningAgent], issue: Callable[..., Card]
) -> None:
    other = "https://auth.esante.example"
    agent = start_agent("--trust-origin", TRUSTED, "--trust-origin", other)
    card = issue()
    started = agent.start(new_nonce())
    request_id = started.json["request_id"]
    assert agent.result(request_id).json == {
        "status": "pending",
        "expires_at": started.json["expires_at"],
    }
    agent.submit(request_id, agent.pin_page(request_id), pin=card.user_pin)
    assert agent.result(request_id, origin=other).status == 404  # another trusted origin
    first = agent.result(request_id)
    assert first.json["status"] == "done"
    second = agent.result(request_id)
    assert second.status == 404
    assert second.json["error"] == "unknown_request"


def test_several_cards_the_page_lets_the_person_choose(
    agent: RunningAgent, issue: Callable[..., Card]
) -> None:
    first = issue(given_name="Marie", family_name="Dupont")
    second = issue(given_name="Paul", family_name="Schmit", key_type="rsa", user_pin="654321")
    status = agent.status().json["cards"]
    assert {c["holder"] for c in status} == {"Marie Dupont", "Paul Schmit"}
    nonce = new_nonce()
    request_id = agent.start(nonce).json["request_id"]
    page = agent.pin_page(request_id)
    assert len(page.card_ids) == 2
    assert 'type="radio"' in page.reply.text
    paul = next(c["id"] for c in status if c["holder"] == "Paul Schmit")
    done = agent.submit(request_id, page, pin=second.user_pin, card=paul)
    assert done.state == "done"
    token = agent.result(request_id).json["auth_token"]
    assert verify_token(token, TRUSTED, nonce) == second.certificate
    assert first.certificate != second.certificate


# --- refusals -------------------------------------------------------------------------------------


def test_an_untrusted_origin_is_refused_and_nothing_is_signed(
    agent: RunningAgent, issue: Callable[..., Card]
) -> None:
    issue()
    evil = "https://evil.example"
    preflight = agent.request(
        "OPTIONS",
        "/v1/authenticate",
        origin=evil,
        headers={
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status == 403
    assert preflight.header("Access-Control-Allow-Origin") is None
    started = agent.start(new_nonce(), origin=evil)
    assert started.status == 403
    assert started.json["error"] == "untrusted_origin"
    assert "pin_url" not in started.json
    assert started.header("Access-Control-Allow-Origin") is None
    for path in ("/v1/status", "/v1/authenticate/anything"):
        reply = agent.request("GET", path, origin=evil)
        assert reply.status == 403
        assert reply.json["error"] == "untrusted_origin"  # not even the holder's name
    assert agent.start(new_nonce(), origin="null").status == 403
    # a page's request always has an Origin: without one, no request is made
    assert agent.start(new_nonce(), origin=None).status == 403


def test_cors_preflight_for_a_trusted_origin(agent: RunningAgent) -> None:
    reply = agent.request(
        "OPTIONS",
        "/v1/authenticate",
        headers={
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert reply.status == 204
    assert reply.header("Access-Control-Allow-Origin") == TRUSTED
    assert reply.header("Access-Control-Allow-Private-Network") == "true"
    assert "POST" in (reply.header("Access-Control-Allow-Methods") or "")
    assert "content-type" in (reply.header("Access-Control-Allow-Headers") or "").lower()
    assert "Origin" in (reply.header("Vary") or "")


@pytest.mark.parametrize(
    "host", ["evil.example:{port}", "127.0.0.1:1", "rebind.attacker.example", "127.0.0.1"]
)
def test_dns_rebinding_a_foreign_host_header_is_refused(
    agent: RunningAgent, issue: Callable[..., Card], host: str
) -> None:
    issue()
    host = host.format(port=agent.port)
    for method, path in (("GET", "/v1/status"), ("GET", "/pin/x"), ("GET", "/static/pin.js")):
        reply = agent.request(method, path, origin=None, host=host)
        assert reply.status == 403, path
        assert reply.json["error"] == "invalid_host"
    started = agent.request("POST", "/v1/authenticate", host=host, json_body={"nonce": new_nonce()})
    assert started.status == 403


def test_localhost_is_an_accepted_host(agent: RunningAgent) -> None:
    assert agent.request("GET", "/v1/status", host=f"localhost:{agent.port}").status == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"nonce": ""},
        {"nonce": 42},
        {"nonce": "c2hvcnQ="},  # base64, but of 5 bytes
        {"nonce": "not base64 at all, not base64 at all, not base64!"},
        {"nonce": "A" * 300},
    ],
)
def test_bad_input_is_a_400(agent: RunningAgent, issue: Callable[..., Card], body: object) -> None:
    issue()
    reply = agent.request("POST", "/v1/authenticate", json_body=body)
    assert reply.status == 400
    assert reply.json["error"] == "invalid_request"


def test_malformed_bodies_are_4xx_json(agent: RunningAgent, issue: Callable[..., Card]) -> None:
    issue()
    for body, ctype in (
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"nonce=abc", "application/x-www-form-urlencoded"),
    ):
        reply = agent.request(
            "POST", "/v1/authenticate", body=body, headers={"Content-Type": ctype}
        )
        assert reply.status == 400, body
        assert reply.json["error"] == "invalid_request"
    big = agent.request(
        "POST",
        "/v1/authenticate",
        body=b'{"nonce": "' + b"A" * 20000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert big.status == 413
    assert big.json["error"] == "request_too_large"


def test_no_card(agent: RunningAgent) -> None:
    reply = agent.start(new_nonce())
    assert reply.status == 409
    assert reply.json["error"] == "no_card"
    assert reply.json["error_description"]
    assert reply.header("Access-Control-Allow-Origin") == TRUSTED  # the page can read why


def test_card_removed_after_the_request_the_page_asks_to_insert_it(
    agent: RunningAgent, issue: Callable[..., Card], cards: SoftHSM
) -> None:
    card = issue()
    request_id = agent.start(new_nonce()).json["request_id"]
    page = agent.pin_page(request_id)
    cards.delete_token(card.label)
    removed = agent.submit(request_id, page, pin=card.user_pin)
    assert removed.state == "pending"
    assert "card_removed" in removed.messages
    assert agent.result(request_id).json["last_error"] == "no_card"
    again = agent.pin_page(request_id)
    assert "no_card" in again.messages
    assert not again.has_pin_field
    # another card goes in: the same request goes on
    other = issue(user_pin="111111")
    page = agent.pin_page(request_id)
    assert page.has_pin_field
    assert agent.submit(request_id, page, pin=other.user_pin).state == "done"


# --- the PIN ----------------------------------------------------------------------------------------


def test_wrong_pin_is_reported_and_the_right_pin_still_works(
    agent: RunningAgent, issue: Callable[..., Card]
) -> None:
    card = issue(user_pin="246810")
    nonce = new_nonce()
    request_id = agent.start(nonce).json["request_id"]
    page = agent.pin_page(request_id)
    wrong = agent.submit(request_id, page, pin="000000")
    assert wrong.state == "pending"
    assert "wrong_pin" in wrong.messages
    assert "blocks" in wrong.reply.text  # the card blocks after too many
    status = agent.result(request_id).json
    assert status["status"] == "pending"
    assert status["last_error"] == "wrong_pin"
    right = agent.submit(request_id, wrong, pin="246810")
    assert right.state == "done"
    assert right.closes_itself
    token = agent.result(request_id).json["auth_token"]
    assert verify_token(token, TRUSTED, nonce) == card.certificate


def test_softhsm_never_blocks_the_pin(agent: RunningAgent, issue: Callable[..., Card]) -> None:
    """SoftHSM2 2.6 has no retry counter: it flags USER_PIN_COUNT_LOW and never locks.

    A real card blocks after its retries (typically 3); that path is covered in-process
    (tests/cardagent/test_app.py) with the PKCS#11 error a blocked card returns.
    """
    card = issue()
    request_id = agent.start(new_nonce()).json["request_id"]
    page = agent.pin_page(request_id)
    for _ in range(12):
        page = agent.submit(request_id, page, pin="999999")
        assert page.state == "pending"
        assert "wrong_pin" in page.messages
        assert "pin_blocked" not in page.messages
    assert agent.result(request_id).json["last_error"] == "wrong_pin"
    assert agent.submit(request_id, page, pin=card.user_pin).state == "done"


def test_empty_pin_does_not_reach_the_card(agent: RunningAgent, issue: Callable[..., Card]) -> None:
    issue()
    request_id = agent.start(new_nonce()).json["request_id"]
    page = agent.submit(request_id, agent.pin_page(request_id), pin="")
    assert "pin_empty" in page.messages
    assert "last_error" not in agent.result(request_id).json


def test_cancel_on_the_pin_page(agent: RunningAgent, issue: Callable[..., Card]) -> None:
    issue()
    request_id = agent.start(new_nonce()).json["request_id"]
    page = agent.submit(request_id, agent.pin_page(request_id), action="cancel")
    assert page.state == "cancelled"
    assert "cancelled" in page.messages
    assert page.closes_itself
    result = agent.result(request_id).json
    assert result["status"] == "failed"
    assert result["error"] == "cancelled"
    assert result["error_description"]
    assert agent.pin_page(request_id).state == "over"


def test_the_page_cancels_with_delete(agent: RunningAgent, issue: Callable[..., Card]) -> None:
    card = issue()
    request_id = agent.start(new_nonce()).json["request_id"]
    page = agent.pin_page(request_id)
    deleted = agent.request("DELETE", f"/v1/authenticate/{request_id}")
    assert deleted.status == 204
    assert deleted.header("Access-Control-Allow-Origin") == TRUSTED
    assert agent.result(request_id).status == 404
    late = agent.submit(request_id, page, pin=card.user_pin)
    assert late.state == "over"


# --- the PIN page's own protections ------------------------------------------------------------------


def test_pin_page_is_strict(agent: RunningAgent, issue: Callable[..., Card]) -> None:
    issue(given_name="Anne", family_name="Muller")
    request_id = agent.start(new_nonce()).json["request_id"]
    page = agent.pin_page(request_id)
    reply = page.reply
    assert reply.status == 200
    csp = reply.header("Content-Security-Policy") or ""
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert reply.header("X-Frame-Options") == "DENY"
    assert reply.header("Referrer-Policy") == "no-referrer"
    assert reply.header("Cache-Control") == "no-store"
    html = reply.text
    # no inline script: every <script> has a src and no body
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts
    assert all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html, re.I)  # no onclick=… handlers
    # what the person sees
    assert TRUSTED in html
    assert "Anne Muller" in html
    pin = re.search(r"<input[^>]*name=\"pin\"[^>]*>", html)
    assert pin
    for attribute in ('type="password"', 'autocomplete="off"', 'inputmode="numeric"', 'id="pin"'):
        assert attribute in pin.group(0)
    assert '<label for="pin">' in html
    assert 'value="sign"' in html
    assert 'value="cancel"' in html
    script = agent.request("GET", "/static/pin.js", origin=None)
    assert script.status == 200
    assert "javascript" in (script.header("Content-Type") or "")
    assert b"window.close()" in script.body


def test_pin_page_speaks_french(agent: RunningAgent, issue: Callable[..., Card]) -> None:
    issue()
    request_id = agent.start(new_nonce()).json["request_id"]
    page = agent.pin_page(request_id, headers={"Accept-Language": "fr-LU,fr;q=0.9,en;q=0.5"})
    assert '<html lang="fr">' in page.reply.text
    assert "Code PIN de la carte" in page.reply.text
    assert page.reply.header("Content-Language") == "fr"


def test_pin_form_posted_from_another_origin_is_refused(
    agent: RunningAgent, issue: Callable[..., Card]
) -> None:
    card = issue()
    request_id = agent.start(new_nonce()).json["request_id"]
    page = agent.pin_page(request_id)
    for origin, headers in (
        (TRUSTED, {}),  # not even the trusted page may post the PIN form
        ("https://evil.example", {}),
        ("null", {"Sec-Fetch-Site": "cross-site"}),  # a sandboxed frame elsewhere
        ("null", {"Sec-Fetch-Site": "same-site"}),
        (None, {"Sec-Fetch-Site": "cross-site"}),
        (None, {"Sec-Fetch-Site": "same-site"}),
    ):
        refused = agent.submit(request_id, page, pin=card.user_pin, origin=origin, headers=headers)
        assert refused.reply.status == 403, origin
        assert refused.state == "refused"
        assert refused.csrf_token is None  # the refusal does not hand out the form's token
    assert agent.result(request_id).json["status"] == "pending"
    forged = dataclasses.replace(page, csrf_token="x" * 43)
    assert agent.submit(request_id, forged, pin=card.user_pin).reply.status == 403
    # "Origin: null" with Sec-Fetch-Site: same-origin is what Chromium sends for this page's own
    # form under its Referrer-Policy: no-referrer (seen in tests/browser): accepted
    ok = agent.submit(request_id, page, pin=card.user_pin, origin="null", headers={})
    assert ok.state == "done"


def test_pin_form_without_origin_is_accepted(
    agent: RunningAgent, issue: Callable[..., Card]
) -> None:
    """Older browsers send neither Origin nor Sec-Fetch-Site; the form's token still has to be
    right."""
    card = issue()
    request_id = agent.start(new_nonce()).json["request_id"]
    page = agent.pin_page(request_id)
    forged = dataclasses.replace(page, csrf_token="x" * 43)
    refused = agent.submit(request_id, forged, pin=card.user_pin, origin=None, fetch_site=None)
    assert refused.reply.status == 403
    ok = agent.submit(request_id, page, pin=card.user_pin, origin=None, fetch_site=None)
    assert ok.state == "done"


def test_unknown_request_page(agent: RunningAgent) -> None:
    page = agent.pin_page("no-such-request")
    assert page.reply.status == 404
    assert page.state == "over"
