"""Levels of assurance as a strict relying service sees them: a smartcard sign-in gives the full
level, and a limited session steps up to it with the card when the service asks for it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from ..card_signing import sign_challenge
from ..conftest import run_authsvc
from ..oidc.conftest import Person
from .conftest import (
    ACR_HIGH,
    ACR_LOW,
    Browser,
    Driver,
    Rp,
    Rps,
    authorization,
    introspector,
    sign_in,
)

CARD_AMR = {"sc", "hwk", "pin"}


@pytest.fixture(params=["es256", "rs256"])
def rp(request: pytest.FixtureRequest, rps: Rps) -> Rp:
    return rps(request.param)


def test_smartcard_sign_in(
    rp: Rp, rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    b = browser()
    signed = sign_in(driver, b, rp, anne, method="smartcard")
    assert signed.flow is not None
    assert signed.flow["methods"] == ["password", "smartcard"]
    assert signed.tokens["id_token_header"]["alg"] == rp.id_token_alg
    claims = signed.id_claims
    assert claims["sub"] == anne.subject
    assert claims["acr"] == ACR_HIGH
    assert set(claims["amr"]) >= CARD_AMR, claims["amr"]
    assert "pwd" not in claims["amr"]
    assert signed.at_claims["acr"] == ACR_HIGH
    found = driver(
        "introspect",
        name=introspector(rps, rp).name,
        token=signed.tokens["access_token"],
    )
    assert found["active"] is True
    assert found["acr"] == ACR_HIGH
    info = driver(
        "userinfo", name=rp.name, access_token=signed.tokens["access_token"], sub=claims["sub"]
    )
    assert info["sub"] == claims["sub"]

    # the acr is the session's level, never just what was asked
    low = sign_in(driver, b, rp, prompt="none", acr_values=ACR_LOW)
    assert low.id_claims["acr"] == ACR_HIGH
    assert low.at_claims["acr"] == ACR_HIGH


def test_prompt_login_signs_in_again(
    rp: Rp, rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    """``prompt=login`` with a live session: the person signs in again; same session, same
    ``sub``, an ``auth_time`` no older than the first one."""
    b = browser()
    first = sign_in(driver, b, rp, anne)
    again = sign_in(driver, b, rp, anne, prompt="login")
    assert again.flow is not None
    assert again.id_claims["sub"] == first.id_claims["sub"]
    assert again.id_claims["sid"] == first.id_claims["sid"]
    assert again.id_claims["auth_time"] >= first.id_claims["auth_time"]
    assert again.id_claims["acr"] == ACR_LOW

    # max_age: a sign-in older than that is done again (openid-client checks auth_time)
    time.sleep(2.1)
    recent = sign_in(driver, b, rp, anne, max_age=1)
    assert recent.flow is not None
    assert recent.id_claims["auth_time"] > again.id_claims["auth_time"]
    assert recent.id_claims["sid"] == first.id_claims["sid"]


def test_card_revocation_ends_what_the_card_opened(
    rp: Rp, rps: Rps, driver: Driver, browser: Callable[[], Browser], anne: Person
) -> None:
    """INTERFACE §5 through a relying service's eyes: the helpdesk revokes the card; the session
    it opened ends, the service gets a valid back-channel logout token, its tokens are dead, and
    the card signs no one in any more."""
    b = browser()
    signed = sign_in(driver, b, rp, anne, method="smartcard")
    done = run_authsvc(
        "helpdesk",
        "revoke-card",
        anne.matricule,
        "--reason",
        "lost",
        "--json",
        env=rps.provider.env,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert len(result["revoked"]) == 1
    assert result["sessions_ended"] == 1

    token = rps.backchannel.wait_for(rp.name)[0]
    verified = driver("logout_token", name=rp.name, token=token, id_token_alg=rp.id_token_alg)
    assert verified["claims"]["sid"] == signed.id_claims["sid"]
    assert verified["claims"]["sub"] == signed.id_claims["sub"]
    error = driver.refused("refresh", name=rp.name, refresh_token=signed.tokens["refresh_token"])
    assert error.get("error") == "invalid_grant", error
    found = driver(
        "introspect", name=introspector(rps, rp).name, token=signed.tokens["access_token"]
    )
    assert found == {"active": False}

    request = driver("authorize", name=rp.name, redirect_uri=rp.redirect_uri, scope="openid")
    reply = b.request(request["url"])
    assert reply.location.startswith("/login?flow="), reply.location
    flow_id = reply.location.split("=", 1)[1]
    flow = b.request(f"/api/login/{flow_id}").json()
    challenge = flow["challenge"]
    refused = b.request(
        f"/api/login/{flow_id}/smartcard",
        {
            "csrf_token": flow["csrf_token"],
            "auth_token": sign_challenge(
                b.softhsm, anne.card, nonce=challenge["nonce"], origin=challenge["origin"]
            ),
        },
    )
    assert refused.status == 400, refused.body
    assert refused.json()["error"] == "invalid_card"


#: the two ways a service asks for the full level (INTERFACE §3 "Levels")
FULL = {
    "acr_values": {"acr_values": ACR_HIGH},
    "essential_acr_claim": {
        "claims": json.dumps({"id_token": {"acr": {"essential": True, "values": [ACR_HIGH]}}})
    },
}


@pytest.mark.parametrize("asked_by", list(FULL))
def test_step_up_from_password_to_smartcard(
    asked_by: str,
    rp: Rp,
    rps: Rps,
    driver: Driver,
    browser: Callable[[], Browser],
    anne: Person,
) -> None:
    """Limited (password) → full: ``acr_values=…/LoA/high`` (or an essential ``acr`` claim) asks
    for the card only (not the password again), and the tokens say the full level for the same
    ``sub`` and session."""
    full_level = FULL[asked_by]
    b = browser()
    limited = sign_in(driver, b, rp, anne)
    assert limited.id_claims["acr"] == ACR_LOW
    assert limited.id_claims["amr"] == ["pwd"]

    # prompt=none cannot step up: interaction_required, from an RFC 9207 response
    request, callback, flow = authorization(driver, b, rp, prompt="none", **full_level)
    assert flow is None
    error = driver.refused("callback", name=rp.name, state=request["state"], url=callback)
    assert error["name"] == "AuthorizationResponseError", error
    assert error["error"] == "interaction_required", error

    full = sign_in(driver, b, rp, anne, method="smartcard", **full_level)
    assert full.flow is not None
    assert full.flow["required_acr"] == ACR_HIGH
    assert full.flow["methods"] == ["smartcard"]
    claims = full.id_claims
    assert claims["acr"] == ACR_HIGH
    assert set(claims["amr"]) >= CARD_AMR, claims["amr"]
    assert claims["sub"] == limited.id_claims["sub"] == anne.subject
    assert claims["sid"] == limited.id_claims["sid"]
    assert claims["auth_time"] >= limited.id_claims["auth_time"]
    assert full.at_claims["acr"] == ACR_HIGH
    assert full.at_claims["sub"] == claims["sub"]

    # now full: the next request for the full level needs no sign-in
    again = sign_in(driver, b, rp, prompt="none", **full_level)
    assert again.flow is None
    assert again.id_claims["acr"] == ACR_HIGH
    assert again.id_claims["sid"] == claims["sid"]
