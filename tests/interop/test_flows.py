"""The authorization-code flow end to end, driven by openid-client for each kind of relying
service: a confidential ES256 client (client_secret_basic), a confidential RS256 client
(client_secret_post), a public client (PKCE only) and a private_key_jwt client.

openid-client validates, by itself: RFC 9207 ``iss`` and ``state`` in the callback, the code
exchange with the PKCE verifier, the token response, the ID token (signature against jwks_uri with
exactly the client's algorithm, ``iss``, ``aud``, ``exp``, ``iat``, ``nonce``, ``auth_time`` and
``max_age``), the userinfo ``sub``, introspection and revocation answers. The driver verifies the
access token as an RFC 9068 JWT. What the tests add are INTERFACE §3's own rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ..oidc.conftest import Person
from .conftest import (
    ACR_LOW,
    SCOPE,
    Browser,
    Driver,
    Rp,
    Rps,
    authorization,
    introspector,
    sign_in,
)

CLIENTS = ["es256", "rs256", "public", "private_key_jwt"]
AT_CLAIMS = {"iss", "sub", "client_id", "aud", "scope", "exp", "iat", "jti", "acr", "auth_time"}
ID_CLAIMS = {"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid"}
INTROSPECTION = {"active", "sub", "client_id", "scope", "exp", "acr", "auth_time"}


@pytest.fixture(params=CLIENTS)
def rp(request: pytest.FixtureRequest, rps: Rps) -> Rp:
    return rps(request.param)


def userinfo_of(person: Person) -> dict[str, Any]:
    """What ``openid profile email professional`` releases about Anne (tests/oidc/conftest.py)."""
    return {
        "name": "Anne Muller",
        "given_name": "Anne",
        "family_name": "Muller",
        "email": f"professional.{person.matricule[8:11]}@example.lu",
        "email_verified": True,
        "profession": "doctor",
        "provider_code": "123456-78",
    }


def assert_token_dead(driver: Driver, rps: Rps, rp: Rp, tokens: dict[str, Any]) -> None:
    """Refresh refused, access token inactive at introspection and refused at userinfo."""
    if tokens.get("refresh_token"):
        error = driver.refused("refresh", name=rp.name, refresh_token=tokens["refresh_token"])
        assert error.get("error") == "invalid_grant", error
    who = introspector(rps, rp)
    assert driver("introspect", name=who.name, token=tokens["access_token"]) == {"active": False}
    error = driver.refused(
        "userinfo",
        name=rp.name,
        access_token=tokens["access_token"],
        sub=tokens["access_token_claims"]["sub"],
    )
    assert error.get("status") == 401, error
    assert "invalid_token" in str(error.get("cause")), error


def test_code_flow_with_password(
    rp: Rp, rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    b = browser()
    signed = sign_in(driver, b, rp, anne, max_age=600)
    assert signed.flow is not None
    assert signed.flow["methods"] == ["password", "smartcard"]
    tokens = signed.tokens
    issuer = rps.provider.issuer

    # the token response
    assert tokens["token_type"] == "bearer"
    assert 0 < tokens["expires_in"] <= 300
    assert set(tokens["scope"].split()) == set(SCOPE.split())
    assert tokens["refresh_token"]

    # the ID token: signed with the client's algorithm by a key of jwks_uri (openid-client)
    header, claims = tokens["id_token_header"], signed.id_claims
    assert header["alg"] == rp.id_token_alg
    assert header["kid"]
    assert set(claims) >= ID_CLAIMS, claims
    assert claims["iss"] == issuer
    assert claims["aud"] in (rp.client_id, [rp.client_id])
    assert claims["sub"] == anne.subject
    assert anne.matricule not in claims["sub"]
    assert "matricule" not in claims
    assert claims["acr"] == ACR_LOW
    assert claims["amr"] == ["pwd"]
    assert claims["auth_time"] <= claims["iat"] < claims["exp"]

    # the access token: an RFC 9068 JWT (typ at+jwt, verified by the driver)
    at = signed.at_claims
    assert tokens["access_token_header"]["typ"] == "at+jwt"
    assert set(at) >= AT_CLAIMS, at
    assert at["iss"] == issuer
    assert at["sub"] == claims["sub"]
    assert at["client_id"] == rp.client_id
    assert set(at["scope"].split()) == set(SCOPE.split())
    assert at["acr"] == ACR_LOW
    assert at["auth_time"] == claims["auth_time"]
    assert 0 < at["exp"] - at["iat"] <= 300

    # userinfo: the claims of the scopes, for the same sub (checked by openid-client)
    info = driver("userinfo", name=rp.name, access_token=tokens["access_token"], sub=claims["sub"])
    assert info == {"sub": claims["sub"], **userinfo_of(anne)}

    # introspection of both tokens (RFC 7662, INTERFACE §3)
    who = introspector(rps, rp)
    for token in ("access_token", "refresh_token"):
        found = driver("introspect", name=who.name, token=tokens[token], hint=token)
        if token == "refresh_token" and who is not rp:
            # a refresh token is its client's alone: a resource server learns nothing of it
            assert found == {"active": False}, found
            continue
        assert set(found) >= INTROSPECTION, (token, found)
        assert found["active"] is True
        assert found["sub"] == claims["sub"]
        assert found["client_id"] == rp.client_id
        assert set(found["scope"].split()) == set(SCOPE.split())
        assert found["acr"] == ACR_LOW
        assert found["auth_time"] == claims["auth_time"]
    assert driver("introspect", name=who.name, token=tokens["access_token"])["exp"] == at["exp"]

    # single sign-on: the same browser, prompt=none, a new code and no sign-in
    again = sign_in(driver, b, rp, prompt="none")
    assert again.flow is None
    assert again.id_claims["sub"] == claims["sub"]
    assert again.id_claims["sid"] == claims["sid"]
    assert again.id_claims["auth_time"] == claims["auth_time"]
    assert again.id_claims["nonce"] != claims["nonce"]


def test_refresh_rotates_and_reuse_ends_the_grant(
    rp: Rp, rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    signed = sign_in(driver, browser(), rp, anne)
    first = signed.tokens

    second = driver("refresh", name=rp.name, refresh_token=first["refresh_token"])
    assert second["token_type"] == "bearer"
    assert second["refresh_token"] and second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    at = second["access_token_claims"]
    assert at["sub"] == signed.at_claims["sub"]
    assert at["client_id"] == rp.client_id
    assert at["acr"] == ACR_LOW
    assert at["auth_time"] == signed.at_claims["auth_time"]
    assert at["jti"] != signed.at_claims["jti"]
    if second.get("id_token"):  # OpenID Connect Core §12.2: the same person, grant and client
        assert second["id_token_header"]["alg"] == rp.id_token_alg
        claims = second["id_token_claims"]
        for name in ("iss", "sub", "aud", "auth_time", "acr", "sid"):
            assert claims[name] == signed.id_claims[name], name
        assert claims.get("nonce") in (None, signed.id_claims["nonce"])
    info = driver("userinfo", name=rp.name, access_token=second["access_token"], sub=at["sub"])
    assert info["sub"] == at["sub"]

    # the old refresh token is refused ...
    error = driver.refused("refresh", name=rp.name, refresh_token=first["refresh_token"])
    assert error.get("error") == "invalid_grant", error
    assert error.get("status") == 400, error
    # ... and its reuse revoked the whole family (RFC 9700 §4.14.2): the newer tokens die too
    assert_token_dead(driver, rps, rp, second)


def test_revocation(
    rp: Rp, rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    tokens = sign_in(driver, browser(), rp, anne).tokens
    who = introspector(rps, rp)

    # an access token: inactive at once; the grant lives on
    driver("revoke", name=rp.name, token=tokens["access_token"], hint="access_token")
    assert driver("introspect", name=who.name, token=tokens["access_token"]) == {"active": False}
    error = driver.refused(
        "userinfo",
        name=rp.name,
        access_token=tokens["access_token"],
        sub=tokens["access_token_claims"]["sub"],
    )
    assert error.get("status") == 401, error
    refreshed = driver("refresh", name=rp.name, refresh_token=tokens["refresh_token"])

    # a refresh token (no hint): the grant ends, with the access tokens it issued
    driver("revoke", name=rp.name, token=refreshed["refresh_token"])
    assert driver("introspect", name=who.name, token=refreshed["refresh_token"]) == {
        "active": False
    }
    assert_token_dead(driver, rps, rp, refreshed)

    # RFC 7009 §2.2: a token the provider does not know is answered 200 too
    driver("revoke", name=rp.name, token="not-a-token-of-this-provider")


def test_logout(
    rp: Rp, rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    """RP-initiated logout with id_token_hint: redirected to the registered post-logout URI
    with the state, without asking; the back-channel logout token is valid for a strict relying
    service; everything issued in the session is dead; the browser is signed out."""
    b = browser()
    signed = sign_in(driver, b, rp, anne)
    url = driver(
        "end_session_url",
        name=rp.name,
        id_token_hint=signed.tokens["id_token"],
        post_logout_redirect_uri=rp.post_logout_redirect_uri,
        state="bye-123",
    )["url"]
    assert url.startswith(rps.provider.issuer + "/logout?")
    reply = b.request(url)
    assert reply.status in (302, 303), (reply.status, reply.body[:500])
    assert reply.location == f"{rp.post_logout_redirect_uri}?state=bye-123"

    logout_tokens = rps.backchannel.wait_for(rp.name)
    assert len(logout_tokens) == 1
    verified = driver(
        "logout_token", name=rp.name, token=logout_tokens[0], id_token_alg=rp.id_token_alg
    )
    assert verified["header"]["alg"] == rp.id_token_alg
    assert verified["claims"]["sid"] == signed.id_claims["sid"]
    assert verified["claims"]["sub"] == signed.id_claims["sub"]

    assert_token_dead(driver, rps, rp, signed.tokens)

    # signed out: prompt=none is answered login_required, with iss (RFC 9207 covers errors too)
    request, callback, flow = authorization(driver, b, rp, prompt="none")
    assert flow is None
    error = driver.refused("callback", name=rp.name, state=request["state"], url=callback)
    assert error["name"] == "AuthorizationResponseError", error
    assert error["error"] == "login_required", error


def test_pairwise_subject(
    rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    """``--subject-type pairwise``: the service's own ``sub``, stable, never the account's public
    one nor the matricule, and the same in every token, answer and logout token it gets."""
    rp, other = rps("pairwise"), rps("es256")
    b = browser()
    first = sign_in(driver, b, rp, anne)
    sub = first.id_claims["sub"]
    assert sub != anne.subject
    assert anne.matricule not in sub
    assert first.at_claims["sub"] == sub
    assert driver("userinfo", name=rp.name, access_token=first.tokens["access_token"], sub=sub)
    assert driver("introspect", name=rp.name, token=first.tokens["access_token"])["sub"] == sub
    refreshed = driver("refresh", name=rp.name, refresh_token=first.tokens["refresh_token"])
    assert refreshed["access_token_claims"]["sub"] == sub
    if refreshed.get("id_token"):
        assert refreshed["id_token_claims"]["sub"] == sub

    # another service in the same session sees the public sub; a new session, the same pairwise
    assert sign_in(driver, b, other).id_claims["sub"] == anne.subject
    assert sign_in(driver, browser(), rp, anne).id_claims["sub"] == sub

    # the back-channel logout tokens of the session: each service's own sub
    url = driver(
        "end_session_url",
        name=rp.name,
        id_token_hint=first.tokens["id_token"],
        post_logout_redirect_uri=rp.post_logout_redirect_uri,
    )["url"]
    assert b.request(url).location == rp.post_logout_redirect_uri
    for service, expected in ((rp, sub), (other, anne.subject)):
        token = rps.backchannel.wait_for(service.name)[0]
        verified = driver("logout_token", name=service.name, token=token, id_token_alg="ES256")
        assert verified["claims"]["sub"] == expected, service.name
        assert verified["claims"]["sid"] == first.id_claims["sid"]


def test_revoking_a_refresh_token_with_a_wrong_hint(
    rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    """The hint is only a hint: a refresh token revoked with ``token_type_hint=access_token`` is
    revoked all the same (else the client believes it gone while it still works)."""
    rp = rps("es256")
    tokens = sign_in(driver, browser(), rp, anne).tokens
    driver("revoke", name=rp.name, token=tokens["refresh_token"], hint="access_token")
    error = driver.refused("refresh", name=rp.name, refresh_token=tokens["refresh_token"])
    assert error.get("error") == "invalid_grant", error


def test_introspecting_a_refresh_token_with_a_wrong_hint(
    rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    rp = rps("es256")
    tokens = sign_in(driver, browser(), rp, anne).tokens
    found = driver("introspect", name=rp.name, token=tokens["refresh_token"], hint="access_token")
    assert found["active"] is True, found


def test_another_client_cannot_revoke_a_token(
    rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    """RFC 7009 §2.1: the token must have been issued to the client that revokes it."""
    rp, other = rps("es256"), rps.resource_server()
    tokens = sign_in(driver, browser(), rp, anne).tokens
    error = driver.refused("revoke", name=other.name, token=tokens["refresh_token"])
    assert error.get("status") == 400, error
    assert driver("introspect", name=rp.name, token=tokens["refresh_token"])["active"] is True
    assert driver("refresh", name=rp.name, refresh_token=tokens["refresh_token"])
