"""The authorization endpoint (INTERFACE §3): what is refused, what is redirected, and when a
person must sign in (prompt, max_age, login_hint, levels)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from authsvc.oidc.claims import ACR_HIGH, ACR_LOW

from .conftest import RP, callback, claims_of, full_sign_in, pkce

ISSUER = "http://127.0.0.1:5000"


def query(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def test_discovery(app) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    response = client.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    meta = response.json
    assert meta["issuer"] == ISSUER
    for name in (
        "authorization",
        "token",
        "userinfo",
        "revocation",
        "introspection",
        "end_session",
    ):
        assert meta[f"{name}_endpoint"].startswith(ISSUER)
    assert meta["response_types_supported"] == ["code"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(
        meta["grant_types_supported"]
    )
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["acr_values_supported"] == [ACR_LOW, ACR_HIGH]
    assert {"ES256", "RS256"} <= set(meta["id_token_signing_alg_values_supported"])
    assert {"client_secret_basic", "client_secret_post", "private_key_jwt", "none"} <= set(
        meta["token_endpoint_auth_methods_supported"]
    )
    assert meta["backchannel_logout_supported"] is True
    assert meta["backchannel_logout_session_supported"] is True
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert "professional" in meta["scopes_supported"]
    assert {"acr", "amr", "sid", "profession", "provider_code"} <= set(meta["claims_supported"])
    etag = response.headers["ETag"]
    assert "max-age" in response.headers["Cache-Control"]
    assert (
        client.get("/.well-known/openid-configuration", headers={"If-None-Match": etag}).status_code
        == 304
    )


def test_jwks_publishes_es256_and_rs256(app) -> None:  # type: ignore[no-untyped-def]
    response = app.test_client().get("/jwks.json")
    keys = response.json["keys"]
    assert {k["alg"] for k in keys} == {"ES256", "RS256"}
    assert all("d" not in k and "p" not in k for k in keys)  # never a private part
    assert response.headers["ETag"]


def test_pkce_is_required(browser, anne, rp) -> None:  # type: ignore[no-untyped-def]
    response = browser().authorize(rp, state="s1")
    q = query(response)
    assert q["error"] == "invalid_request"
    assert q["state"] == "s1"
    assert q["iss"] == ISSUER  # RFC 9207, errors too


def test_plain_pkce_is_refused(browser, anne, rp) -> None:  # type: ignore[no-untyped-def]
    response = browser().authorize(rp, code_challenge="x" * 43, code_challenge_method="plain")
    assert query(response)["error"] == "invalid_request"


@pytest.mark.parametrize(
    "redirect_uri",
    [f"{RP}/callback/", f"{RP}/callback?x=1", "https://evil.example/callback", f"{RP}/CALLBACK"],
)
def test_a_redirect_uri_not_registered_is_never_redirected_to(
    browser, rp, redirect_uri: str
) -> None:  # type: ignore[no-untyped-def]
    _, challenge = pkce()
    response = browser().authorize(
        rp, redirect_uri=redirect_uri, code_challenge=challenge, code_challenge_method="S256"
    )
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert b"redirect" in response.data.lower()


def test_unknown_client_is_a_page_not_a_redirect(browser, rp) -> None:  # type: ignore[no-untyped-def]
    rp.client_id = "nobody"
    response = browser().authorize(rp, code_challenge="x" * 43, code_challenge_method="S256")
    assert response.status_code in (400, 401)
    assert "Location" not in response.headers


def test_only_the_code_flow(browser, rp) -> None:  # type: ignore[no-untyped-def]
    _, challenge = pkce()
    response = browser().authorize(
        rp, response_type="token", code_challenge=challenge, code_challenge_method="S256"
    )
    assert query(response)["error"] == "unsupported_response_type"


def test_without_a_session_the_browser_goes_to_sign_in(browser, rp) -> None:  # type: ignore[no-untyped-def]
    _, challenge = pkce()
    response = browser().authorize(rp, code_challenge=challenge, code_challenge_method="S256")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?flow=")


def test_prompt_none_without_a_session_is_login_required(browser, rp) -> None:  # type: ignore[no-untyped-def]
    _, challenge = pkce()
    response = browser().authorize(
        rp, prompt="none", state="s2", code_challenge=challenge, code_challenge_method="S256"
    )
    q = query(response)
    assert q["error"] == "login_required"
    assert q["state"] == "s2"
    assert q["iss"] == ISSUER


def test_prompt_none_with_a_session_gives_a_code(browser, anne, rp, tokens) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    full_sign_in(b, rp, anne, tokens)
    _, challenge = pkce()
    cb = callback(
        b.authorize(rp, prompt="none", code_challenge=challenge, code_challenge_method="S256"), rp
    )
    assert "code" in cb


def test_prompt_none_on_a_limited_session_asking_for_full_is_interaction_required(
    browser, anne, rp, tokens
) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    full_sign_in(b, rp, anne, tokens)
    _, challenge = pkce()
    response = b.authorize(
        rp,
        prompt="none",
        acr_values=ACR_HIGH,
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    assert query(response)["error"] == "interaction_required"


def test_sso_across_relying_services(browser, anne, rp, new_client, tokens) -> None:  # type: ignore[no-untyped-def]
    other = new_client(name="Secure messaging", redirect_uris=["https://msg.example.test/cb"])
    b = browser()
    full_sign_in(b, rp, anne, tokens)
    _, challenge = pkce()
    cb = callback(b.authorize(other, code_challenge=challenge, code_challenge_method="S256"), other)
    assert "code" in cb  # no second sign-in


def test_prompt_login_asks_again_once(browser, anne, rp, tokens) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    full_sign_in(b, rp, anne, tokens)
    _, challenge = pkce()
    response = b.authorize(
        rp, prompt="login", code_challenge=challenge, code_challenge_method="S256"
    )
    flow_id = b.flow_of(response)
    signed = b.login_password(flow_id, anne)
    cb = callback(b.follow(signed.json["redirect_to"]), rp)  # and then it does not loop
    assert "code" in cb


def test_max_age(browser, anne, rp, tokens, clock) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    full_sign_in(b, rp, anne, tokens)
    clock.advance(seconds=120)
    _, challenge = pkce()
    assert "code" in callback(
        b.authorize(rp, max_age="600", code_challenge=challenge, code_challenge_method="S256"), rp
    )
    response = b.authorize(rp, max_age="60", code_challenge=challenge, code_challenge_method="S256")
    assert response.headers["Location"].startswith("/login?flow=")
    none = b.authorize(
        rp, max_age="60", prompt="none", code_challenge=challenge, code_challenge_method="S256"
    )
    assert query(none)["error"] == "login_required"


def test_login_hint_of_another_person_asks_to_sign_in(browser, anne, jean, rp, tokens) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    full_sign_in(b, rp, anne, tokens)
    _, challenge = pkce()
    same = b.authorize(
        rp, login_hint=anne.matricule, code_challenge=challenge, code_challenge_method="S256"
    )
    assert "code" in callback(same, rp)
    other = b.authorize(
        rp, login_hint=jean.matricule, code_challenge=challenge, code_challenge_method="S256"
    )
    flow_id = b.flow_of(other)
    assert b.client.get(f"/api/login/{flow_id}").json["login_hint"] == jean.matricule


def test_full_level_required_offers_only_the_card(browser, anne, rp) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    _, challenge = pkce()
    flow_id = b.flow_of(
        b.authorize(rp, acr_values=ACR_HIGH, code_challenge=challenge, code_challenge_method="S256")
    )
    flow = b.client.get(f"/api/login/{flow_id}").json
    assert flow["required_acr"] == ACR_HIGH
    assert flow["methods"] == ["smartcard"]
    assert set(flow["challenge"]) == {"nonce", "origin", "expires_at"}
    refused = b.login_password(flow_id, anne)
    assert refused.status_code == 400
    assert refused.json["error"] == "method_not_allowed"


def test_essential_acr_claim_requires_the_card(browser, rp) -> None:  # type: ignore[no-untyped-def]
    import json

    b = browser()
    _, challenge = pkce()
    claims = json.dumps({"id_token": {"acr": {"essential": True, "values": [ACR_HIGH]}}})
    flow_id = b.flow_of(
        b.authorize(rp, claims=claims, code_challenge=challenge, code_challenge_method="S256")
    )
    assert b.client.get(f"/api/login/{flow_id}").json["methods"] == ["smartcard"]


def test_both_levels_asked_for_either_will_do(browser, rp) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    _, challenge = pkce()
    flow_id = b.flow_of(
        b.authorize(
            rp,
            acr_values=f"{ACR_LOW} {ACR_HIGH}",
            code_challenge=challenge,
            code_challenge_method="S256",
        )
    )
    assert b.client.get(f"/api/login/{flow_id}").json["methods"] == ["password", "smartcard"]


def test_client_registered_high_is_full_whatever_the_request(
    browser, anne, new_client, tokens, revocation_server
) -> None:  # type: ignore[no-untyped-def]
    dsp = new_client(name="DSP", require_acr="high")
    b = browser()
    _, challenge = pkce()
    flow_id = b.flow_of(
        b.authorize(dsp, acr_values=ACR_LOW, code_challenge=challenge, code_challenge_method="S256")
    )
    assert b.client.get(f"/api/login/{flow_id}").json["methods"] == ["smartcard"]
    token = full_sign_in(b, dsp, anne, tokens, method="card")
    assert claims_of(token["id_token"])["acr"] == ACR_HIGH


def test_acr_is_the_sessions_level_not_what_was_asked(browser, anne, rp, tokens) -> None:  # type: ignore[no-untyped-def]
    token = full_sign_in(browser(), rp, anne, tokens, acr_values=f"{ACR_HIGH} {ACR_LOW}")
    assert claims_of(token["id_token"])["acr"] == ACR_LOW


# --- malformed requests are answered, never a 500 ----------------------------------------------


@pytest.mark.parametrize(
    "claims",
    [
        '{"id_token": "x"}',
        '{"id_token": {"acr": {"essential": true, "values": 5}}}',
        '{"userinfo": {"acr": "high"}}',
        "[[1]]",
        "[" * 3000 + "]" * 3000,
        '{"id_token": {"acr": {"essential": true, "values": [1, 2]}}}',
        "x" * 5000,
    ],
    ids=["member", "values", "acr", "array", "deep", "numbers", "long"],
)
def test_a_malformed_claims_parameter_is_invalid_request(browser, rp, claims: str) -> None:  # type: ignore[no-untyped-def]
    _, challenge = pkce()
    response = browser().authorize(
        rp, claims=claims, code_challenge=challenge, code_challenge_method="S256", nonce="n"
    )
    assert response.status_code in (302, 303), response.status_code
    assert query(response)["error"] == "invalid_request"
    assert query(response)["iss"] == ISSUER


def test_an_essential_acr_that_cannot_be_given_is_access_denied(browser, rp) -> None:  # type: ignore[no-untyped-def]
    """OIDC Core §5.5.1.1: an essential claim that cannot be met is a failed authentication."""
    _, challenge = pkce()
    response = browser().authorize(
        rp,
        claims='{"id_token": {"acr": {"essential": true, "values": ["urn:example:loa:9"]}}}',
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    assert query(response)["error"] == "access_denied"


@pytest.mark.parametrize(
    ("name", "error"),
    [("request", "request_not_supported"), ("request_uri", "request_uri_not_supported")],
)
def test_request_objects_are_refused(browser, rp, name: str, error: str) -> None:  # type: ignore[no-untyped-def]
    _, challenge = pkce()
    response = browser().authorize(
        rp,
        **{name: "eyJhbGciOiJub25lIn0.e30."},
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    assert query(response)["error"] == error
    assert "code" not in query(response)


def test_over_long_values_are_answered_not_stored(browser, rp) -> None:  # type: ignore[no-untyped-def]
    """A nonce longer than what is kept is refused; a login_hint that is not a matricule is
    ignored; a scope repeated hundreds of times is kept once (on PostgreSQL each would otherwise
    overflow its column)."""
    _, challenge = pkce()
    b = browser()
    refused = b.authorize(
        rp, nonce="n" * 501, code_challenge=challenge, code_challenge_method="S256"
    )
    assert query(refused)["error"] == "invalid_request"
    ignored = b.authorize(
        rp,
        login_hint="9" * 40,
        scope="openid " * 300,
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    assert ignored.headers["Location"].startswith("/login?flow="), ignored.headers["Location"]
