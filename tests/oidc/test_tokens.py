"""Tokens (INTERFACE §3): codes, ID and access tokens, refresh rotation, the levels over time,
client authentication, userinfo, introspection, revocation."""

from __future__ import annotations

import base64
import json
import secrets
import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey

from authsvc.errors import InvalidInput
from authsvc.oidc.claims import ACR_HIGH, ACR_LOW
from authsvc.oidc.models import Client

from .conftest import basic, callback, claims_of, full_sign_in, header_of, pkce

ISSUER = "http://127.0.0.1:5000"


def verify_jwt(app, token: str) -> dict:  # type: ignore[no-untyped-def]
    keys = KeySet.import_key_set(app.test_client().get("/jwks.json").json)
    return dict(jwt.decode(token, keys, algorithms=["ES256", "RS256"]).claims)


def test_limited_sign_in(browser, anne, rp, tokens, app) -> None:  # type: ignore[no-untyped-def]
    token = full_sign_in(browser(), rp, anne, tokens, nonce="n-42")
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] <= 300
    assert set(token) >= {"access_token", "id_token", "refresh_token", "scope"}
    id_token = verify_jwt(app, token["id_token"])
    assert header_of(token["id_token"])["alg"] == "ES256"
    assert id_token["iss"] == ISSUER
    assert id_token["aud"] == rp.client_id
    assert id_token["nonce"] == "n-42"
    assert id_token["acr"] == ACR_LOW
    assert id_token["amr"] == ["pwd"]
    assert id_token["sub"] == anne.subject
    assert anne.matricule not in json.dumps(id_token)  # never the matricule (no matricule scope)
    assert {"exp", "iat", "auth_time", "sid"} <= set(id_token)
    assert id_token["profession"] == "doctor"
    access = verify_jwt(app, token["access_token"])
    assert header_of(token["access_token"])["typ"] == "at+jwt"
    assert {
        "iss",
        "sub",
        "client_id",
        "aud",
        "scope",
        "exp",
        "iat",
        "jti",
        "acr",
        "auth_time",
    } <= set(access)
    assert access["exp"] - access["iat"] <= 300
    assert access["acr"] == ACR_LOW
    assert access["client_id"] == rp.client_id


def test_full_sign_in_with_the_card(browser, anne, rp, tokens, revocation_server) -> None:  # type: ignore[no-untyped-def]
    token = full_sign_in(browser(), rp, anne, tokens, method="card")
    id_token = claims_of(token["id_token"])
    assert id_token["acr"] == ACR_HIGH
    assert {"sc", "hwk", "pin"} <= set(id_token["amr"])
    assert claims_of(token["access_token"])["acr"] == ACR_HIGH


def test_step_up_keeps_the_sub_and_asks_no_password(
    browser, anne, rp, tokens, revocation_server
) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    limited = full_sign_in(b, rp, anne, tokens)
    _, challenge = pkce()
    response = b.authorize(
        rp, acr_values=ACR_HIGH, code_challenge=challenge, code_challenge_method="S256"
    )
    flow_id = b.flow_of(response)
    assert b.client.get(f"/api/login/{flow_id}").json["methods"] == ["smartcard"]
    full = full_sign_in(b, rp, anne, tokens, method="card", acr_values=ACR_HIGH)
    before, after = claims_of(limited["id_token"]), claims_of(full["id_token"])
    assert after["sub"] == before["sub"]
    assert after["sid"] == before["sid"]  # the same session, stepped up
    assert after["acr"] == ACR_HIGH
    assert set(after["amr"]) >= {"pwd", "sc", "hwk", "pin"}


def test_session_cookie_changes_at_sign_in_and_step_up(
    browser, anne, rp, tokens, revocation_server
) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    full_sign_in(b, rp, anne, tokens)
    first = b.client.get_cookie("authsvc_session").value
    full_sign_in(b, rp, anne, tokens, method="card", acr_values=ACR_HIGH)
    second = b.client.get_cookie("authsvc_session").value
    assert first != second


def test_full_level_lasts_its_max_age(
    browser, anne, rp, tokens, clock, revocation_server, settings
) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    full = full_sign_in(b, rp, anne, tokens, method="card")
    verifier, challenge = pkce()
    for _ in range(settings.full_level_max_age // 3600):  # the person keeps using the session
        clock.advance(hours=1)
        callback(
            b.authorize(rp, prompt="none", code_challenge=challenge, code_challenge_method="S256"),
            rp,
        )
    clock.advance(seconds=settings.full_level_max_age % 3600 + 1)
    cb = callback(b.authorize(rp, code_challenge=challenge, code_challenge_method="S256"), rp)
    later = tokens.exchange(rp, cb["code"], verifier).json
    assert claims_of(later["id_token"])["acr"] == ACR_LOW  # limited again
    assert claims_of(later["id_token"])["sub"] == claims_of(full["id_token"])["sub"]
    refreshed = tokens.refresh(rp, full["refresh_token"]).json
    assert claims_of(refreshed["access_token"])["acr"] == ACR_LOW
    high = b.authorize(
        rp, acr_values=ACR_HIGH, code_challenge=challenge, code_challenge_method="S256"
    )
    assert high.headers["Location"].startswith("/login?flow=")  # the card again


def test_code_is_single_use_and_replay_revokes_what_it_issued(browser, anne, rp, tokens) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    verifier, challenge = pkce()
    cb = b.sign_in(rp, anne, code_challenge=challenge, code_challenge_method="S256")
    first = tokens.exchange(rp, cb["code"], verifier)
    assert first.status_code == 200
    again = tokens.exchange(rp, cb["code"], verifier)
    assert again.status_code == 400
    assert again.json["error"] == "invalid_grant"
    assert tokens.introspect(rp, first.json["access_token"]) == {"active": False}
    assert tokens.refresh(rp, first.json["refresh_token"]).json["error"] == "invalid_grant"
    assert tokens.userinfo(first.json["access_token"]).status_code == 401


def test_code_expires_after_60_seconds(browser, anne, rp, tokens, clock) -> None:  # type: ignore[no-untyped-def]
    verifier, challenge = pkce()
    cb = browser().sign_in(rp, anne, code_challenge=challenge, code_challenge_method="S256")
    clock.advance(seconds=61)
    assert tokens.exchange(rp, cb["code"], verifier).json["error"] == "invalid_grant"


def test_code_is_bound_to_verifier_client_and_redirect_uri(
    browser, anne, rp, new_client, tokens
) -> None:  # type: ignore[no-untyped-def]
    other = new_client(name="Other", redirect_uris=["https://other.example.test/cb"])
    for tamper in ("verifier", "client", "redirect"):
        verifier, challenge = pkce()
        cb = browser().sign_in(rp, anne, code_challenge=challenge, code_challenge_method="S256")
        if tamper == "verifier":
            response = tokens.exchange(rp, cb["code"], pkce()[0])
        elif tamper == "client":
            response = tokens.exchange(other, cb["code"], verifier)
        else:
            response = tokens.exchange(
                rp, cb["code"], verifier, redirect_uri="https://rp.example.test/other"
            )
        assert response.status_code == 400, tamper
        assert response.json["error"] in ("invalid_grant", "invalid_request"), tamper


def test_refresh_rotates_and_reuse_revokes_the_family(browser, anne, rp, tokens) -> None:  # type: ignore[no-untyped-def]
    token = full_sign_in(browser(), rp, anne, tokens)
    second = tokens.refresh(rp, token["refresh_token"])
    assert second.status_code == 200, second.json
    assert second.json["refresh_token"] != token["refresh_token"]
    assert claims_of(second.json["access_token"])["sub"] == claims_of(token["access_token"])["sub"]
    reuse = tokens.refresh(rp, token["refresh_token"])
    assert reuse.json["error"] == "invalid_grant"
    # the whole family is gone: the newest refresh token and every access token
    assert tokens.refresh(rp, second.json["refresh_token"]).json["error"] == "invalid_grant"
    assert tokens.introspect(rp, second.json["access_token"]) == {"active": False}
    assert tokens.introspect(rp, token["access_token"]) == {"active": False}


def test_tokens_die_with_the_session(browser, anne, rp, tokens, clock, settings) -> None:  # type: ignore[no-untyped-def]
    token = full_sign_in(browser(), rp, anne, tokens)
    clock.advance(seconds=settings.session_max_age + 1)
    assert tokens.refresh(rp, token["refresh_token"]).json["error"] == "invalid_grant"


def test_refresh_follows_the_session_idle_rule(browser, anne, rp, tokens, clock) -> None:  # type: ignore[no-untyped-def]
    """A refresh is activity in the session (every hour: still alive after three); a session
    nobody used for two hours is over, for its refresh tokens too."""
    token = full_sign_in(browser(), rp, anne, tokens)
    for _ in range(3):
        clock.advance(hours=1)
        refreshed = tokens.refresh(rp, token["refresh_token"])
        assert refreshed.status_code == 200, refreshed.json
        token = refreshed.json
    clock.advance(hours=2)
    assert tokens.refresh(rp, token["refresh_token"]).json["error"] == "invalid_grant"


def test_introspection(browser, anne, rp, tokens) -> None:  # type: ignore[no-untyped-def]
    token = full_sign_in(browser(), rp, anne, tokens)
    body = tokens.introspect(rp, token["access_token"])
    assert body["active"] is True
    assert {"sub", "client_id", "scope", "exp", "acr", "auth_time"} <= set(body)
    assert body["sub"] == anne.subject
    assert tokens.introspect(rp, "garbage")["active"] is False
    # a public client may not introspect
    response = tokens.client.post(
        "/introspect", data={"token": token["access_token"], "client_id": "x"}
    )
    assert response.status_code == 401


def test_a_refresh_token_is_introspected_by_its_client_only(
    browser, anne, rp, new_client, tokens
) -> None:  # type: ignore[no-untyped-def]
    """A resource server (any confidential client) may introspect access tokens; a refresh token
    is its client's alone: to another client it is inactive, and tells nothing."""
    api = new_client(name="Records API", grants=["client_credentials"], redirect_uris=[])
    token = full_sign_in(browser(), rp, anne, tokens)
    assert tokens.introspect(api, token["access_token"])["active"] is True
    assert tokens.introspect(api, token["refresh_token"]) == {"active": False}
    assert tokens.introspect(rp, token["refresh_token"])["active"] is True


def test_revocation(browser, anne, rp, tokens) -> None:  # type: ignore[no-untyped-def]
    token = full_sign_in(browser(), rp, anne, tokens)
    response = tokens.client.post(
        "/revoke", data={"token": token["access_token"]}, headers=basic(rp)
    )
    assert response.status_code == 200
    assert tokens.introspect(rp, token["access_token"])["active"] is False
    assert tokens.userinfo(token["access_token"]).status_code == 401
    # revoking the refresh token revokes the family
    tokens.client.post(
        "/revoke",
        data={"token": token["refresh_token"], "token_type_hint": "refresh_token"},
        headers=basic(rp),
    )
    assert tokens.refresh(rp, token["refresh_token"]).json["error"] == "invalid_grant"
    # an unknown token: 200 as RFC 7009 says
    assert (
        tokens.client.post("/revoke", data={"token": "nope"}, headers=basic(rp)).status_code == 200
    )


def test_userinfo(browser, anne, rp, tokens) -> None:  # type: ignore[no-untyped-def]
    token = full_sign_in(browser(), rp, anne, tokens)
    response = tokens.userinfo(token["access_token"])
    assert response.status_code == 200
    body = response.json
    assert body["sub"] == anne.subject
    assert body["name"] == "Anne Muller"
    assert body["email_verified"] is True
    assert body["provider_code"] == "123456-78"
    assert "matricule" not in body
    assert tokens.userinfo("nope").status_code == 401
    assert "WWW-Authenticate" in tokens.userinfo("nope").headers


def test_matricule_scope_only_for_clients_registered_with_it(
    browser, anne, new_client, tokens
) -> None:  # type: ignore[no-untyped-def]
    plain = new_client(name="Plain")
    token = full_sign_in(browser(), plain, anne, tokens, scope="openid matricule profile")
    assert "matricule" not in token["scope"].split()
    granted = new_client(name="Insurer", scopes=["matricule"])
    token = full_sign_in(browser(), granted, anne, tokens, scope="openid matricule")
    assert tokens.userinfo(token["access_token"]).json["matricule"] == anne.matricule


def test_pairwise_subjects(browser, anne, new_client, tokens) -> None:  # type: ignore[no-untyped-def]
    one = new_client(
        name="One", subject_type="pairwise", redirect_uris=["https://one.example.test/cb"]
    )
    two = new_client(
        name="Two", subject_type="pairwise", redirect_uris=["https://two.example.test/cb"]
    )
    b = browser()
    sub_one = claims_of(full_sign_in(b, one, anne, tokens)["id_token"])["sub"]
    sub_two = claims_of(full_sign_in(b, two, anne, tokens)["id_token"])["sub"]
    again = claims_of(full_sign_in(browser(), one, anne, tokens)["id_token"])["sub"]
    assert sub_one != sub_two
    assert sub_one == again
    assert anne.subject not in (sub_one, sub_two)


def test_rs256_client(browser, anne, new_client, tokens, app) -> None:  # type: ignore[no-untyped-def]
    legacy = new_client(name="Legacy", id_token_alg="RS256")
    token = full_sign_in(browser(), legacy, anne, tokens)
    assert header_of(token["id_token"])["alg"] == "RS256"
    assert verify_jwt(app, token["id_token"])["aud"] == legacy.client_id


def test_public_client(browser, anne, new_client, tokens) -> None:  # type: ignore[no-untyped-def]
    app_client = new_client(
        name="Native app", public=True, redirect_uris=["http://127.0.0.1:8765/cb"]
    )
    assert app_client.client_secret is None
    token = full_sign_in(browser(), app_client, anne, tokens)
    assert "access_token" in token


def test_client_secret_post_and_wrong_secrets(browser, anne, new_client, tokens) -> None:  # type: ignore[no-untyped-def]
    post = new_client(name="Post", auth_method="client_secret_post")
    verifier, challenge = pkce()
    cb = browser().sign_in(post, anne, code_challenge=challenge, code_challenge_method="S256")
    data = {
        "grant_type": "authorization_code",
        "code": cb["code"],
        "redirect_uri": post.redirect_uri,
        "code_verifier": verifier,
    }
    wrong = tokens.client.post(
        "/token", data={**data, "client_id": post.client_id, "client_secret": "wrong"}
    )
    assert wrong.status_code == 401
    assert wrong.json["error"] == "invalid_client"
    ok = tokens.client.post(
        "/token", data={**data, "client_id": post.client_id, "client_secret": post.client_secret}
    )
    assert ok.status_code == 200, ok.json


def test_client_credentials(new_client, tokens, app) -> None:  # type: ignore[no-untyped-def]
    service = new_client(name="Connector", grants=["client_credentials"], redirect_uris=[])
    response = tokens.client.post(
        "/token", data={"grant_type": "client_credentials"}, headers=basic(service)
    )
    assert response.status_code == 200, response.json
    access = verify_jwt(app, response.json["access_token"])
    assert access["sub"] == service.client_id
    assert "acr" not in access
    assert "refresh_token" not in response.json


def test_client_credentials_scopes_are_those_registered(new_client, tokens, app) -> None:  # type: ignore[no-untyped-def]
    """A service gets the scopes it was registered with, never those it merely asks for."""
    service = new_client(
        name="Connector", grants=["client_credentials"], redirect_uris=[], scopes=["matricule"]
    )
    response = tokens.client.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "scope": "openid helpdesk matricule admin:all " + "matricule " * 300,
        },
        headers=basic(service),
    )
    assert response.status_code == 200, response.json
    assert response.json["scope"] == "matricule"
    assert verify_jwt(app, response.json["access_token"])["scope"] == "matricule"
    assert tokens.introspect(service, response.json["access_token"])["scope"] == "matricule"


def test_client_credentials_refused_to_a_client_without_the_grant(rp, tokens) -> None:  # type: ignore[no-untyped-def]
    response = tokens.client.post(
        "/token", data={"grant_type": "client_credentials"}, headers=basic(rp)
    )
    assert response.json["error"] == "unauthorized_client"


def private_key_jwt_client(new_client):  # type: ignore[no-untyped-def]
    key = ECKey.generate_key("P-256", parameters={"kid": "rp-1", "alg": "ES256"}, private=True)
    client = new_client(
        name="Strong RP", auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]}
    )
    return client, key


def assertion(  # type: ignore[no-untyped-def]
    client, key, *, aud: str = f"{ISSUER}/token", jti: str | None = None, alg: str = "ES256"
) -> str:
    """A client assertion (RFC 7523) of ``client``, signed with ``key`` (kid rp-1)."""
    now = int(time.time())
    claims = {
        "iss": client.client_id,
        "sub": client.client_id,
        "aud": aud,
        "iat": now,
        "exp": now + 60,
        "jti": jti or secrets.token_hex(8),
    }
    return jwt.encode({"alg": alg, "kid": "rp-1"}, claims, key)


def client_credentials_with(tokens, client_assertion: str):  # type: ignore[no-untyped-def]
    return tokens.client.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion,
        },
    )


def test_private_key_jwt(browser, anne, new_client, tokens) -> None:  # type: ignore[no-untyped-def]
    client, key = private_key_jwt_client(new_client)
    assert client.client_secret is None
    verifier, challenge = pkce()
    cb = browser().sign_in(client, anne, code_challenge=challenge, code_challenge_method="S256")
    the_assertion = assertion(client, key)
    data = {
        "grant_type": "authorization_code",
        "code": cb["code"],
        "redirect_uri": client.redirect_uri,
        "code_verifier": verifier,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": the_assertion,
    }
    ok = tokens.client.post("/token", data=data)
    assert ok.status_code == 200, ok.json
    # the same assertion twice: refused (single use)
    replay = tokens.client.post(
        "/token",
        data={**data, "grant_type": "refresh_token", "refresh_token": ok.json["refresh_token"]},
    )
    assert replay.status_code in (400, 401), replay.json
    assert replay.json["error"] == "invalid_client", replay.json
    # another audience: refused
    wrong_aud = tokens.client.post(
        "/token",
        data={
            **data,
            "grant_type": "refresh_token",
            "refresh_token": ok.json["refresh_token"],
            "client_assertion": assertion(client, key, aud="https://elsewhere"),
        },
    )
    assert wrong_aud.json["error"] == "invalid_client", wrong_aud.json
    fresh = tokens.client.post(
        "/token",
        data={
            **data,
            "grant_type": "refresh_token",
            "refresh_token": ok.json["refresh_token"],
            "client_assertion": assertion(client, key),
        },
    )
    assert fresh.status_code == 200, fresh.json


@pytest.mark.parametrize(
    "key",
    [
        {"kty": "oct", "k": "c2hhcmVkLXNlY3JldC1vZi10aGlydHktdHdvLWJ5dGVzLi4u", "kid": "s"},
        ECKey.generate_key("P-256", private=True).as_dict(private=True),
    ],
    ids=["shared secret", "private key"],
)
def test_private_key_jwt_registers_public_keys_only(new_client, key) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput):
        new_client(name="Weak RP", auth_method="private_key_jwt", jwks={"keys": [key]})


def test_a_shared_secret_never_signs_a_client_assertion(new_client, tokens, services) -> None:  # type: ignore[no-untyped-def]
    """Even a symmetric key that reached the database (as registration refuses it now) does not
    authenticate an HS256 assertion: private_key_jwt verifies with asymmetric algorithms only."""
    client, _ = private_key_jwt_client(new_client)
    secret = OctKey.generate_key(256, parameters={"kid": "rp-1"})
    with services.db.transaction() as db:
        db.get_one(Client, client.client_id).jwks = {"keys": [secret.as_dict(private=True)]}
    response = client_credentials_with(tokens, assertion(client, secret, alg="HS256"))
    # 400, not 401: the client did not authenticate with the Authorization header (RFC 6749 §5.2)
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_client"
    assert "HS256" in response.json["error_description"]


def test_alg_none_is_never_accepted(new_client, tokens) -> None:  # type: ignore[no-untyped-def]
    client, _ = private_key_jwt_client(new_client)
    now = int(time.time())
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    body = (
        base64.urlsafe_b64encode(
            json.dumps(
                {
                    "iss": client.client_id,
                    "sub": client.client_id,
                    "aud": f"{ISSUER}/token",
                    "exp": now + 60,
                    "jti": "x",
                }
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    response = tokens.client.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": f"{header}.{body}.",
        },
    )
    assert response.status_code in (400, 401)


def test_keys_rotate_and_old_tokens_still_verify(
    browser, anne, rp, tokens, app, services, clock
) -> None:  # type: ignore[no-untyped-def]
    before = full_sign_in(browser(), rp, anne, tokens)
    old_kid = header_of(before["access_token"])["kid"]
    services.keys.rotate(actor="test")
    # the new key is published at once, and signs once every instance has had time to see it
    kids = {k["kid"] for k in app.test_client().get("/jwks.json").json["keys"]}
    assert len(kids) == 4
    still_old = full_sign_in(browser(), rp, anne, tokens)
    assert header_of(still_old["access_token"])["kid"] == old_kid
    from authsvc.oidc.keys import PUBLISH_LEAD

    clock.advance(seconds=PUBLISH_LEAD.total_seconds() + 1)
    services.keys.reload()
    after = full_sign_in(browser(), rp, anne, tokens)
    assert header_of(after["access_token"])["kid"] != old_kid
    kids = {k["kid"] for k in app.test_client().get("/jwks.json").json["keys"]}
    assert old_kid in kids  # still published: what the old key signed still verifies
    assert verify_jwt(app, still_old["id_token"])["sub"]
    clock.advance(hours=2)
    services.keys.reload()
    kids = {k["kid"] for k in app.test_client().get("/jwks.json").json["keys"]}
    assert old_kid not in kids  # its tokens have all expired


# --- malformed client authentication is answered, never a 500 ------------------------------------


def test_a_key_id_that_is_not_a_string_is_an_invalid_token(tokens) -> None:  # type: ignore[no-untyped-def]
    token = "eyJraWQiOltdfQ.e30.x"  # header {"kid":[]}
    assert tokens.userinfo(token).status_code == 401


def test_basic_credentials_that_are_not_utf8(tokens) -> None:  # type: ignore[no-untyped-def]
    for path in ("/token", "/revoke", "/introspect"):
        response = tokens.client.post(
            path,
            data={"grant_type": "client_credentials", "token": "x"},
            headers={"Authorization": "Basic //46/w=="},
        )
        assert response.status_code == 401, (path, response.json)
        assert response.json["error"] == "invalid_client"


def test_one_client_authentication_method_per_request(rp, tokens) -> None:  # type: ignore[no-untyped-def]
    response = tokens.client.post(
        "/token",
        data={"grant_type": "client_credentials", "client_secret": rp.client_secret},
        headers=basic(rp),
    )
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


def test_an_assertion_naming_a_client_without_keys(rp, tokens) -> None:  # type: ignore[no-untyped-def]
    """A client_secret_basic client has no keys: an assertion in its name is invalid_client."""
    key = ECKey.generate_key("P-256", private=True)
    response = client_credentials_with(tokens, assertion(rp, key))
    assert response.status_code in (400, 401)
    assert response.json["error"] == "invalid_client"


def test_an_unknown_token_type_hint_is_a_bad_request(browser, anne, rp, tokens) -> None:  # type: ignore[no-untyped-def]
    token = full_sign_in(browser(), rp, anne, tokens)
    for path in ("/revoke", "/introspect"):
        response = tokens.client.post(
            path,
            data={"token": token["refresh_token"], "token_type_hint": "foo"},
            headers=basic(rp),
        )
        assert response.status_code == 400, (path, response.status_code)
        assert response.json["error"] == "unsupported_token_type"
    assert tokens.introspect(rp, token["refresh_token"])["active"] is True
