"""Discovery as openid-client reads it, and the ways a relying service may authenticate: a
service acting in its own name (client_credentials), private_key_jwt with each algorithm that
discovery advertises."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ..conftest import run_authsvc
from .conftest import ACR_HIGH, ACR_LOW, SCOPE, Driver, Rps, authorization, sign_in


def test_discovery_is_accepted_and_advertises_what_the_interface_promises(
    rps: Rps, driver: Driver
) -> None:
    """openid-client's discovery() checks that the document's issuer is exactly the one asked
    for; INTERFACE §3 lists what it must advertise."""
    rp = rps("es256")
    meta: dict[str, Any] = rps.discover(rp)["metadata"]
    issuer = rps.provider.issuer
    assert meta["issuer"] == issuer
    for endpoint, path in {
        "authorization_endpoint": "/authorize",
        "token_endpoint": "/token",
        "userinfo_endpoint": "/userinfo",
        "revocation_endpoint": "/revoke",
        "introspection_endpoint": "/introspect",
        "end_session_endpoint": "/logout",
        "jwks_uri": "/jwks.json",
    }.items():
        assert meta[endpoint] == issuer + path, endpoint
    assert meta["response_types_supported"] == ["code"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(
        meta["grant_types_supported"]
    )
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["acr_values_supported"] == [ACR_LOW, ACR_HIGH]
    assert {"ES256", "RS256"} <= set(meta["id_token_signing_alg_values_supported"])
    assert "none" not in meta["id_token_signing_alg_values_supported"]
    assert {"client_secret_basic", "client_secret_post", "private_key_jwt", "none"} <= set(
        meta["token_endpoint_auth_methods_supported"]
    )
    assert meta["backchannel_logout_supported"] is True
    assert meta["backchannel_logout_session_supported"] is True
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert set(SCOPE.split()) <= set(meta["scopes_supported"])
    assert {"sub", "acr", "amr", "auth_time", "sid", "nonce"} <= set(meta["claims_supported"])


def test_discovery_gives_the_assertion_algorithms_of_every_endpoint_that_takes_them(
    rps: Rps,
) -> None:
    meta: dict[str, Any] = rps.discover(rps("es256"))["metadata"]
    for endpoint in ("token", "revocation", "introspection"):
        methods = meta[f"{endpoint}_endpoint_auth_methods_supported"]
        if {"private_key_jwt", "client_secret_jwt"} & set(methods):
            algs = meta.get(f"{endpoint}_endpoint_auth_signing_alg_values_supported")
            assert algs, endpoint
            assert "none" not in algs, endpoint


def test_client_credentials(rps: Rps, driver: Driver) -> None:
    """``--grant client_credentials``: an access token in the service's own name (sub = its
    client id, no acr), an RFC 9068 JWT that introspects as active."""
    api = rps.resource_server()
    tokens = driver("client_credentials", name=api.name)
    assert tokens["token_type"] == "bearer"
    assert "refresh_token" not in tokens
    assert "id_token" not in tokens
    at = tokens["access_token_claims"]
    assert at["sub"] == api.client_id
    assert at["client_id"] == api.client_id
    assert "acr" not in at
    assert 0 < at["exp"] - at["iat"] <= 300
    info = driver("introspect", name=api.name, token=tokens["access_token"])
    assert info["active"] is True
    assert info["sub"] == api.client_id
    assert info["client_id"] == api.client_id


@pytest.mark.parametrize(
    "alg",
    [
        "RS256",
        "PS256",
        "EdDSA",
    ],
)
def test_private_key_jwt_with_each_advertised_algorithm(  # type: ignore[no-untyped-def]
    alg: str, rps: Rps, driver: Driver, browser, anne
) -> None:
    """Discovery's token_endpoint_auth_signing_alg_values_supported (ES256 is the
    private_key_jwt client of the other tests): client assertions signed with each are accepted
    at the token, introspection and revocation endpoints."""
    rp = rps(f"private_key_jwt_{alg}")
    meta = rps.discover(rp)["metadata"]
    assert alg in meta["token_endpoint_auth_signing_alg_values_supported"]
    tokens = sign_in(driver, browser(), rp, anne).tokens
    assert driver("introspect", name=rp.name, token=tokens["access_token"])["active"] is True
    driver("revoke", name=rp.name, token=tokens["refresh_token"])
    assert driver("introspect", name=rp.name, token=tokens["access_token"]) == {"active": False}


def test_private_key_jwt_refuses_a_shared_secret(  # type: ignore[no-untyped-def]
    rps: Rps, driver: Driver, browser, anne, tmp_path
) -> None:
    """private_key_jwt means an asymmetric key: a client_secret_jwt-style HS256 assertion
    (openid-client's ClientSecretJwt) must not authenticate, and should not be registrable."""
    import base64
    import secrets

    from .conftest import Rp

    secret = secrets.token_urlsafe(32)
    jwk = {
        "kty": "oct",
        "k": base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode(),
        "alg": "HS256",
        "kid": "shared",
    }
    jwks = tmp_path / "oct.jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    redirect_uri = f"http://127.0.0.1:{rps.backchannel.port}/rp/oct/callback"
    done = run_authsvc(
        "clients",
        "create",
        "--name",
        "Interop oct",
        "--redirect-uri",
        redirect_uri,
        "--auth-method",
        "private_key_jwt",
        "--jwks",
        str(jwks),
        "--json",
        env=rps.provider.env,
    )
    if done.returncode != 0:  # refused at registration: fine
        assert "error:" in done.stderr.strip().splitlines()[-1]
        return
    rp = Rp(
        name="oct",
        client_id=json.loads(done.stdout)["client_id"],
        client_secret=secret,
        auth="client_secret_jwt",
        id_token_alg="ES256",
        redirect_uri=redirect_uri,
        post_logout_redirect_uri="",
    )
    rps.discover(rp)
    request, callback, _ = authorization(driver, browser(), rp, anne)
    error = driver.refused("callback", name=rp.name, state=request["state"], url=callback)
    assert error.get("error") == "invalid_client", error
