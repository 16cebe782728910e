"""The Web eID authentication token: every listed algorithm verifies; anything else is refused."""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsvc.pki import webeid
from authsvc.pki.errors import CardRefused

from .authority import ALGORITHM_KEYS, CardAuthority, make_token, sign_challenge
from .conftest import NONCE, ORIGIN

FIELDS = ("unverifiedCertificate", "algorithm", "signature", "format", "appVersion")


def refused(value: object, reason: str, *, origin: str = ORIGIN, nonce: str = NONCE) -> CardRefused:
    with pytest.raises(CardRefused) as info:
        webeid.verify_auth_token(value, origin=origin, nonce=nonce)
    assert info.value.reason == reason, (info.value.reason, info.value.detail)
    return info.value


@pytest.mark.parametrize(("algorithm", "key"), ALGORITHM_KEYS)
def test_a_good_token_verifies_for_every_listed_algorithm(
    authority: CardAuthority, algorithm: str, key: str
) -> None:
    card = authority.issue(key)
    token = webeid.verify_auth_token(
        make_token(card, algorithm, origin=ORIGIN, nonce=NONCE), origin=ORIGIN, nonce=NONCE
    )
    assert token.algorithm.name == algorithm
    assert token.certificate == card.certificate
    assert token.format == "web-eid:1.0"


@pytest.mark.parametrize(("algorithm", "key"), ALGORITHM_KEYS)
def test_a_signature_over_another_nonce_or_origin_is_refused(
    authority: CardAuthority, algorithm: str, key: str
) -> None:
    card = authority.issue(key)
    other_nonce = make_token(card, algorithm, origin=ORIGIN, nonce=NONCE[:-2] + "A=")
    refused(other_nonce, "bad_signature")
    other_origin = make_token(card, algorithm, origin="https://evil.example", nonce=NONCE)
    refused(other_origin, "bad_signature")


def test_the_signed_data_is_the_hash_of_the_origin_then_the_hash_of_the_nonce() -> None:
    for name, hash_name in (("ES256", "sha256"), ("RS384", "sha384"), ("PS512", "sha512")):
        expected = (
            hashlib.new(hash_name, ORIGIN.encode()).digest()
            + hashlib.new(hash_name, NONCE.encode()).digest()
        )
        assert webeid.signed_data(webeid.ALGORITHMS[name], origin=ORIGIN, nonce=NONCE) == expected
    # field separation: "example.com" + ".eu1234" and "example.com.eu" + "1234" differ
    es256 = webeid.ALGORITHMS["ES256"]
    assert webeid.signed_data(es256, origin="example.com", nonce=".eu1234") != webeid.signed_data(
        es256, origin="example.com.eu", nonce="1234"
    )


def test_non_ascii_origin_and_nonce_are_signed_as_utf8(authority: CardAuthority) -> None:
    card = authority.issue("p256")
    origin, nonce = "https://zélé.lu", "nönce"
    token = make_token(card, "ES256", origin=origin, nonce=nonce)
    webeid.verify_auth_token(token, origin=origin, nonce=nonce)


@pytest.mark.parametrize(
    ("algorithm", "key"),
    [
        ("ES256", "p384"),  # ES256 ↔ P-256 only
        ("ES384", "p256"),
        ("ES512", "p384"),
        ("ES256", "rsa2048"),
        ("RS256", "p256"),
        ("PS256", "p256"),
    ],
)
def test_an_algorithm_that_does_not_fit_the_key_is_refused(
    authority: CardAuthority, algorithm: str, key: str
) -> None:
    card = authority.issue(key)
    # signed with the key's natural algorithm, announced as another one
    natural = {"p256": "ES256", "p384": "ES384", "rsa2048": "RS256"}[key]
    signature = sign_challenge(card.key, natural, origin=ORIGIN, nonce=NONCE)
    token = make_token(card, algorithm, origin=ORIGIN, nonce=NONCE, signature=signature)
    refused(token, "algorithm_mismatch")


def test_an_ed25519_key_fits_no_algorithm(authority: CardAuthority) -> None:
    card = authority.issue("ed25519")
    token = make_token(card, "ES256", origin=ORIGIN, nonce=NONCE, signature=b"\0" * 64)
    refused(token, "algorithm_mismatch")


def test_pss_and_pkcs1_are_not_interchangeable(authority: CardAuthority) -> None:
    card = authority.issue("rsa2048")
    pss = sign_challenge(card.key, "PS256", origin=ORIGIN, nonce=NONCE)
    refused(make_token(card, "RS256", origin=ORIGIN, nonce=NONCE, signature=pss), "bad_signature")
    pkcs1 = sign_challenge(card.key, "RS256", origin=ORIGIN, nonce=NONCE)
    refused(make_token(card, "PS256", origin=ORIGIN, nonce=NONCE, signature=pkcs1), "bad_signature")


def test_a_hash_mismatch_within_the_family_is_a_bad_signature(authority: CardAuthority) -> None:
    card = authority.issue("rsa2048")
    rs384 = sign_challenge(card.key, "RS384", origin=ORIGIN, nonce=NONCE)
    refused(make_token(card, "RS256", origin=ORIGIN, nonce=NONCE, signature=rs384), "bad_signature")


@pytest.mark.parametrize("algorithm", ["HS256", "none", "EdDSA", "es256", "RS1", "ES256K", ""])
def test_an_unlisted_algorithm_is_refused(authority: CardAuthority, algorithm: str) -> None:
    card = authority.issue("p256")
    token = make_token(card, "ES256", origin=ORIGIN, nonce=NONCE)
    token["algorithm"] = algorithm
    refused(token, "unsupported_algorithm")


@pytest.fixture
def token(authority: CardAuthority) -> dict[str, Any]:
    return make_token(authority.issue("p256"), "ES256", origin=ORIGIN, nonce=NONCE)


@pytest.mark.parametrize("value", [None, [], "token", 42, 1.5, True, b"{}", ["a", "b"]])
def test_a_token_that_is_not_an_object_is_malformed(value: object) -> None:
    refused(value, "malformed_token")


@pytest.mark.parametrize("field", FIELDS)
def test_a_missing_field_is_malformed(token: dict[str, Any], field: str) -> None:
    del token[field]
    refused(token, "malformed_token")


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [None, 1, 1.0, True, [], {}, ["x"]])
def test_a_field_of_the_wrong_type_is_malformed(
    token: dict[str, Any], field: str, value: object
) -> None:
    token[field] = value
    refused(token, "malformed_token")


@pytest.mark.parametrize("field", ["unverifiedCertificate", "signature"])
@pytest.mark.parametrize(
    "value", ["", "not base64!", "====", "a", "AAAA*AAA", "\u00e9\u00e9\u00e9\u00e9", " AAAA"]
)
def test_bad_base64_is_malformed(token: dict[str, Any], field: str, value: str) -> None:
    token[field] = value
    refused(token, "malformed_token")


def test_url_safe_base64_is_not_accepted(authority: CardAuthority) -> None:
    for _ in range(20):  # until the certificate's base64 has a + or a /
        card = authority.issue("p256")
        if "+" in card.b64 or "/" in card.b64:
            break
    token = make_token(card, "ES256", origin=ORIGIN, nonce=NONCE)
    token["unverifiedCertificate"] = card.b64.replace("+", "-").replace("/", "_")
    refused(token, "malformed_token")


def test_base64_without_padding_is_accepted(authority: CardAuthority) -> None:
    card = authority.issue("p256")
    token = make_token(card, "ES256", origin=ORIGIN, nonce=NONCE)
    token["unverifiedCertificate"] = token["unverifiedCertificate"].rstrip("=")
    token["signature"] = token["signature"].rstrip("=")
    webeid.verify_auth_token(token, origin=ORIGIN, nonce=NONCE)


@pytest.mark.parametrize("field", FIELDS)
def test_oversized_fields_are_malformed(token: dict[str, Any], field: str) -> None:
    token[field] = "A" * 40_000
    refused(token, "malformed_token")


@pytest.mark.parametrize(
    "value", ["web-eid:2.0", "web-eid:10.0", "web-eid:11", "webeid:1.0", "", "WEB-EID:1.0", "1.0"]
)
def test_another_token_format_is_refused(token: dict[str, Any], value: str) -> None:
    token["format"] = value
    refused(token, "malformed_token")


@pytest.mark.parametrize("value", ["web-eid:1", "web-eid:1.0", "web-eid:1.1", "web-eid:1.0.3"])
def test_any_web_eid_1_format_is_accepted(token: dict[str, Any], value: str) -> None:
    token["format"] = value
    webeid.verify_auth_token(token, origin=ORIGIN, nonce=NONCE)


def test_unknown_fields_are_ignored(token: dict[str, Any]) -> None:
    token["unverifiedSigningCertificate"] = "…"
    token["supportedSignatureAlgorithms"] = [{"cryptoAlgorithm": "ECC"}]
    webeid.verify_auth_token(token, origin=ORIGIN, nonce=NONCE)


@pytest.mark.parametrize(
    "der",
    [
        b"\x00",
        b"\x30\x03\x02\x01\x01",
        b"garbage" * 30,
        bytes(range(256)),
    ],
)
def test_a_certificate_that_is_not_der_is_malformed(token: dict[str, Any], der: bytes) -> None:
    token["unverifiedCertificate"] = base64.b64encode(der).decode()
    refused(token, "malformed_certificate")


def test_a_truncated_certificate_is_malformed(authority: CardAuthority) -> None:
    card = authority.issue("p256")
    for cut in (1, 10, len(card.der) // 2, len(card.der) - 1):
        token = make_token(card, "ES256", origin=ORIGIN, nonce=NONCE)
        token["unverifiedCertificate"] = base64.b64encode(card.der[:cut]).decode()
        refused(token, "malformed_certificate")


def test_a_pem_certificate_is_malformed(authority: CardAuthority) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    card = authority.issue("p256")
    token = make_token(card, "ES256", origin=ORIGIN, nonce=NONCE)
    token["unverifiedCertificate"] = base64.b64encode(
        card.certificate.public_bytes(Encoding.PEM)
    ).decode()
    refused(token, "malformed_certificate")


@pytest.mark.parametrize(
    ("algorithm", "key"), [("ES256", "p256"), ("ES512", "p521"), ("RS256", "rsa2048")]
)
def test_garbage_or_truncated_signatures_are_refused(
    authority: CardAuthority, algorithm: str, key: str
) -> None:
    card = authority.issue(key)
    good = sign_challenge(card.key, algorithm, origin=ORIGIN, nonce=NONCE)
    for bad in (
        good[:-1],
        good[1:],
        good + b"\0",
        good[: len(good) // 2],
        b"\0" * len(good),
        b"\xff" * len(good),
        bytes([good[0] ^ 1]) + good[1:],
        b"\x01",
        b"\0" * 1024,
    ):
        token = make_token(card, algorithm, origin=ORIGIN, nonce=NONCE, signature=bad)
        refused(token, "bad_signature")


def test_a_der_encoded_ecdsa_signature_is_refused(authority: CardAuthority) -> None:
    """INTERFACE §4: an EC signature is raw r ‖ s, as in JWS — not DER."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    card = authority.issue("p256")
    data = webeid.signed_data(webeid.ALGORITHMS["ES256"], origin=ORIGIN, nonce=NONCE)
    der = card.key.sign(data, ec.ECDSA(hashes.SHA256()))
    refused(make_token(card, "ES256", origin=ORIGIN, nonce=NONCE, signature=der), "bad_signature")


def test_refusals_are_logged_without_the_token(
    token: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="authsvc.pki")
    refused(token, "bad_signature", nonce="another nonce")
    (record,) = [r for r in caplog.records if r.name == "authsvc.pki"]
    assert record.levelno == logging.WARNING
    assert "reason=bad_signature" in record.getMessage()
    assert "Test Issuing CA" in record.getMessage()  # the issuer, for the operator
    for secret in (token["signature"], token["unverifiedCertificate"], NONCE):
        assert secret not in record.getMessage()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_json)
def test_arbitrary_json_is_refused_never_crashes(value: object) -> None:
    with pytest.raises(CardRefused):
        webeid.verify_auth_token(value, origin=ORIGIN, nonce=NONCE)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    overrides=st.dictionaries(
        st.sampled_from(FIELDS),
        _json | st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
    )
)
def test_tokens_with_arbitrary_fields_verify_or_are_refused_never_crash(
    token: dict[str, Any], overrides: dict[str, object]
) -> None:
    """A changed appVersion or a web-eid:1.x format still verifies; anything else is a refusal."""
    changed = {**token, **overrides}
    refusal: CardRefused | None = None
    try:
        webeid.verify_auth_token(changed, origin=ORIGIN, nonce=NONCE)
    except CardRefused as exc:
        refusal = exc
    if refusal is None:
        unchanged = all(changed[k] == token[k] for k in overrides)
        assert unchanged or set(overrides) <= {"appVersion", "format"}
    else:
        assert refusal.code == "invalid_card"
        assert refusal.reason != "bad_signature" or "signature" in overrides
