"""Bad input on every account endpoint: a 4xx JSON error, never a 500 (SECURITY "Bad input").

Hand-picked cases first, then Hypothesis: arbitrary bytes, arbitrary JSON, and well-shaped bodies
with arbitrary values (with the real CSRF token or not), against a real signed-in session.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsvc.accounts.models import Account

from ..oidc.conftest import PASSWORD
from .helpers import assert_json_error, csrf, current_sid, sign_in

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture
def signed_in(browser, rp, anne, services):  # type: ignore[no-untyped-def]
    b = sign_in(browser(), rp, anne)

    def fresh_limits() -> None:
        """Between examples: the per-IP limits and the account's failure count start again, so
        that every example reaches the code under test rather than a 429 or a locked account."""
        b.client.application.extensions["authsvc_limiter"].reset()
        services.login_failures.clear(anne.matricule)
        with services.db.transaction() as db:
            db.get(Account, anne.account_id).failed_logins = 0

    b.fresh_limits = fresh_limits
    return b


def assert_clean(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code < 500, (response.status_code, response.data[:300])
    assert response.mimetype == "application/json"
    if response.status_code >= 400:
        assert_json_error(response, response.status_code)


def test_hand_picked_bodies(signed_in) -> None:  # type: ignore[no-untyped-def]
    b = signed_in
    token = csrf(b)
    url = "/api/account/password"
    cases = [
        (b"", "application/json", 400),
        (b"not json", "application/json", 400),
        (b"\xff\xfe\x00", "application/json", 400),  # not UTF-8
        (b"[1, 2]", "application/json", 400),
        (b'"a string"', "application/json", 400),
        (b"null", "application/json", 400),
        (json.dumps({"csrf_token": token}).encode(), "application/json", 400),  # no new_password
        (json.dumps({"csrf_token": token, "new_password": 12}).encode(), "application/json", 400),
        (json.dumps({"csrf_token": token, "new_password": None}).encode(), "application/json", 400),
        (
            json.dumps({"csrf_token": token, "new_password": ["a"]}).encode(),
            "application/json",
            400,
        ),
        (
            json.dumps(
                {"csrf_token": token, "new_password": "x" * 20, "current_password": 7}
            ).encode(),
            "application/json",
            400,
        ),
        (
            json.dumps({"csrf_token": token, "new_password": "x" * 5000}).encode(),
            "application/json",
            400,
        ),
        (
            json.dumps({"csrf_token": token, "new_password": "a\x00b" * 5}).encode(),
            "application/json",
            400,
        ),
        # a lone surrogate is valid JSON but cannot be hashed: refused, not a 500
        (
            b'{"csrf_token": "' + token.encode() + b'", "new_password": "abc\\ud800def ghi jkl"}',
            "application/json",
            400,
        ),
        (
            b'{"csrf_token": "'
            + token.encode()
            + b'", "new_password": "copper meadow whistles", "current_password": "\\udfff"}',
            "application/json",
            400,
        ),
        (json.dumps({"csrf_token": token, "new_password": "x"}).encode(), "text/plain", 400),
        (b"csrf_token=" + token.encode(), "application/x-www-form-urlencoded", 400),
        (b"{" + b" " * (70 * 1024) + b"}", "application/json", 413),
    ]
    for body, content_type, status in cases:
        response = b.client.post(url, data=body, content_type=content_type)
        assert_json_error(response, status)
    assert b.client.get("/api/account").status_code == 200  # the session survived all of it
    # and the password is the one it was
    assert (
        b.client.post(
            url,
            json={"csrf_token": token, "current_password": PASSWORD, "new_password": PASSWORD},
        ).json["error"]
        == "same_password"
    )


def test_odd_session_ids_and_methods(signed_in) -> None:  # type: ignore[no-untyped-def]
    b = signed_in
    token = csrf(b)
    for sid in ("x" * 500, "%00", "..", "a b", "ü" * 10, "0"):
        response = b.client.post(f"/api/account/sessions/{sid}/end", json={"csrf_token": token})
        assert_clean(response)
        assert response.status_code in (404, 405), (sid, response.status_code)
    assert_json_error(b.client.get(f"/api/account/sessions/{current_sid(b)}/end"), 405)
    assert_json_error(b.client.get("/api/account/password"), 405)
    assert_json_error(b.client.put("/api/account", json={}), 405)
    assert_json_error(b.client.delete("/api/account/sessions"), 405)
    assert b.client.get("/api/account").status_code == 200


common = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ENDPOINTS = ["/password", "/sessions/{sid}/end", "/sessions/unknown/end"]


def url(endpoint: str) -> str:
    return "/api/account" + endpoint.replace("{sid}", "y" * 32)


@common
@given(endpoint=st.sampled_from(ENDPOINTS), body=st.binary(max_size=300))
def test_arbitrary_bytes(signed_in, endpoint: str, body: bytes) -> None:  # type: ignore[no-untyped-def]
    signed_in.fresh_limits()
    response = signed_in.client.post(url(endpoint), data=body, content_type="application/json")
    assert_clean(response)
    assert response.status_code >= 400


@common
@given(endpoint=st.sampled_from(ENDPOINTS), body=json_values)
def test_arbitrary_json(signed_in, endpoint: str, body: object) -> None:  # type: ignore[no-untyped-def]
    signed_in.fresh_limits()
    response = signed_in.client.post(
        url(endpoint), data=json.dumps(body), content_type="application/json"
    )
    assert_clean(response)
    assert response.status_code >= 400


@common
@given(
    real_csrf=st.booleans(),
    current=st.one_of(json_values, st.text(max_size=40)),
    new=st.one_of(json_values, st.text(min_size=0, max_size=40)),
)
def test_right_fields_wrong_values(signed_in, real_csrf: bool, current, new) -> None:  # type: ignore[no-untyped-def]
    signed_in.fresh_limits()
    token = csrf(signed_in) if real_csrf else "forged"
    response = signed_in.client.post(
        "/api/account/password",
        data=json.dumps({"csrf_token": token, "current_password": current, "new_password": new}),
        content_type="application/json",
    )
    assert_clean(response)
    assert 400 <= response.status_code < 429  # never the right current password; no limit hit


@common
@given(sid=st.text(max_size=80))
def test_arbitrary_session_ids(signed_in, sid: str) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import quote

    signed_in.fresh_limits()
    response = signed_in.client.post(
        f"/api/account/sessions/{quote(sid, safe='')}/end",
        json={"csrf_token": csrf(signed_in)},
    )
    assert_clean(response)
    assert response.status_code in (404, 405)
