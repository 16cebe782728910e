"""Proof that the client's checks are live (the same client refuses a response that is wrong in
one thing, so that the other tests' passing means something), and the provider's answers to the
requests where those checks matter most: error responses (RFC 9207 ``iss`` and ``state``) and
requests without a nonce."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ..oidc.conftest import Person
from .conftest import Browser, Driver, Rps, authorization, sign_in


@pytest.fixture
def signed_in_browser(rps: Rps, driver: Driver, browser, anne):  # type: ignore[no-untyped-def]
    """A browser with a session (so that the next authorizations need no sign-in)."""
    b = browser()
    sign_in(driver, b, rps("es256"), anne)
    return b


def test_client_refuses_a_callback_with_another_iss(rps: Rps, driver: Driver, signed_in_browser):  # type: ignore[no-untyped-def]
    """RFC 9207 is checked: the same callback with its ``iss`` changed is refused before the
    code is used (so the checks the other tests pass are real)."""
    rp = rps("es256")
    request, callback, _ = authorization(driver, signed_in_browser, rp)
    error = driver.refused(
        "callback", name=rp.name, state=request["state"], url=callback, tamper="iss"
    )
    assert '"iss" (issuer)' in error["reason"], error


def test_client_refuses_an_id_token_with_a_bad_signature(  # type: ignore[no-untyped-def]
    rps: Rps, driver: Driver, signed_in_browser
) -> None:
    """The ID token's signature is verified against jwks_uri: one flipped bit is refused."""
    rp = rps("es256")
    request, callback, _ = authorization(driver, signed_in_browser, rp)
    error = driver.refused(
        "callback",
        name=rp.name,
        state=request["state"],
        url=callback,
        tamper="id_token_signature",
    )
    assert "JWT signature verification failed" in error["reason"], error


def test_client_refuses_an_id_token_with_another_nonce(  # type: ignore[no-untyped-def]
    rps: Rps, driver: Driver, signed_in_browser
) -> None:
    rp = rps("es256")
    request, callback, _ = authorization(driver, signed_in_browser, rp)
    error = driver.refused(
        "callback",
        name=rp.name,
        state=request["state"],
        url=callback,
        expected_nonce="not-the-nonce-that-was-sent",
    )
    assert 'unexpected ID Token "nonce" claim value' in error["reason"], error


def test_client_refuses_an_id_token_signed_with_another_algorithm(  # type: ignore[no-untyped-def]
    rps: Rps, driver: Driver, browser, anne
) -> None:
    """The RS256 client's ID tokens really are RS256: the same registration, expecting ES256,
    is refused (and the ES256 client's are ES256: the other tests expect exactly that)."""
    rp = rps("rs256")
    b = browser()
    sign_in(driver, b, rp, anne)  # accepted as RS256
    wrong = type(rp)(**{**rp.__dict__, "name": "rs256-expecting-es256", "id_token_alg": "ES256"})
    rps.discover(wrong)
    request, callback, _ = authorization(driver, b, wrong)
    error = driver.refused("callback", name=wrong.name, state=request["state"], url=callback)
    assert 'unexpected JWT "alg" header parameter' in error["reason"], error


@pytest.mark.parametrize(
    ("params", "error_code"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),  # PKCE S256 only
        ({"prompt": "none login"}, "invalid_request"),
    ],
)
def test_error_responses_carry_iss_and_state(
    params: dict[str, str],
    error_code: str,
    rps: Rps,
    driver: Driver,
    browser: Callable[[], Browser],
    anne: Person,
) -> None:
    """An authorization error goes back to the client with ``state`` and ``iss`` (RFC 6749
    §4.1.2.1, RFC 9207 §2): openid-client checks both before it reports the error."""
    rp = rps("es256")
    b = browser()
    if "prompt" in params:
        sign_in(driver, b, rp, anne)  # the prompt check comes after the session's
    request, callback, flow = authorization(driver, b, rp, **params)
    assert flow is None
    error = driver.refused("callback", name=rp.name, state=request["state"], url=callback)
    assert error["name"] == "AuthorizationResponseError", error
    assert error["error"] == error_code, error


def test_without_nonce_the_id_token_has_none(
    rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    """``nonce`` is echoed only when sent: openid-client, not given one, refuses an ID token
    that carries one."""
    rp = rps("rs256")
    request = driver(
        "authorize", name=rp.name, redirect_uri=rp.redirect_uri, scope="openid", without_nonce=True
    )
    assert request["nonce"] is None
    callback, _ = browser().authorize(request["url"], rp, anne)
    tokens = driver("callback", name=rp.name, state=request["state"], url=callback)
    assert "nonce" not in tokens["id_token_claims"]
    assert tokens["id_token_header"]["alg"] == "RS256"
