"""Signing a challenge with a SoftHSM2 card in the test process: what a card agent does, minus the
PIN window. Used by tests that need a valid (or deliberately wrong) Web eID authentication token."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, Mechanism, ObjectClass

from softhsm.testca import Card, SoftHSM

HASHES = {
    "ES256": hashlib.sha256,
    "ES384": hashlib.sha384,
    "ES512": hashlib.sha512,
    "RS256": hashlib.sha256,
}


def algorithm_for(card: Card) -> str:
    key = card.certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]


def sign_challenge(
    softhsm: SoftHSM, card: Card, *, nonce: str, origin: str, algorithm: str | None = None
) -> dict[str, Any]:
    """A Web eID authentication token: the card signs H(origin) ‖ H(nonce) (INTERFACE §4)."""
    algorithm = algorithm or algorithm_for(card)
    h = HASHES[algorithm]
    data = h(origin.encode()).digest() + h(nonce.encode()).digest()
    with softhsm.session(card.label, user_pin=card.user_pin) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=b"\x01")
        if algorithm.startswith("ES"):
            signature = key.sign(h(data).digest(), mechanism=Mechanism.ECDSA)  # raw r ‖ s
        else:
            signature = key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS)
        assert key[Attribute.SENSITIVE]
    der = card.certificate.public_bytes(serialization.Encoding.DER)
    return {
        "unverifiedCertificate": base64.b64encode(der).decode(),
        "algorithm": algorithm,
        "signature": base64.b64encode(signature).decode(),
        "format": "web-eid:1.0",
        "appVersion": "https://authsvc.test/tests",
    }
