"""The Web eID authentication token (INTERFACE §4 "The smartcard challenge (Web eID compatible)").

A token is the JSON object ``{"unverifiedCertificate", "algorithm", "signature", "format",
"appVersion"}`` of the Web eID authentication token format (web-eid-system-architecture-doc,
``docs/web-eid-auth-token-v2-format-spec.md``). The card signs, with ``algorithm``::

    H(origin) ‖ H(nonce)        H = the algorithm's hash; origin and nonce as UTF-8 strings

where ``origin`` and ``nonce`` come from the provider's own store (the challenge), never from the
token: so a signature that verifies proves both, with no further check (Web eID, "Authentication
token validation" and the format specification).

The Web eID "Authentication token validation" section, and how it is done here:

- the token's fields: ``format`` is ``web-eid:1`` (any minor version), ``unverifiedCertificate``
  is present and decodes, ``algorithm`` is one of the nine listed ones, ``signature`` decodes —
  :func:`parse_auth_token`, steps 1–5;
- "looks up the challenge nonce from its local store … validates that the challenge nonce hasn't
  expired" and removes it so that it is used once —
  :func:`authsvc.pki.challenges.consume_challenge`, done by
  :class:`~authsvc.pki.service.SmartcardVerifier` *before* anything else;
- "validates that the token signature was created using the provided user certificate by
  reconstructing the signed data ``hash(origin)+hash(challenge)``" — :func:`verify_signature`,
  steps 6–8;
- "validates the user certificate" (validity period, purpose, trusted CA, OCSP) —
  :class:`~authsvc.pki.certificates.CardCertificateValidator`.

The specification lists the certificate checks before the signature; authsvc verifies the
signature first. Both must pass, so the order changes only which reason is reported when both
fail — and it spares the CRL/OCSP look-ups (network, seconds) for tokens that do not prove
possession of the card's key.

Nothing here raises anything but :class:`~authsvc.pki.errors.CardRefused`, whatever the input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .errors import Reason, refuse

#: ``web-eid:1.0`` as of now; any ``web-eid:1`` (minor versions are backwards-compatible).
FORMAT_PREFIX = "web-eid:1"
#: A card certificate is ~2 KB, i.e. ~2.7 K of base64; RSA-8192 signatures are 1.4 K of base64.
MAX_CERTIFICATE_CHARS = 16 * 1024
MAX_SIGNATURE_CHARS = 2 * 1024
MAX_TEXT_CHARS = 1024


@dataclass(frozen=True)
class Algorithm:
    """One of the JWS algorithms (RFC 7518 §3.3–3.5) a Web eID token may use."""

    name: str
    #: the key it needs: "EC" or "RSA"
    family: str
    #: RS*: PKCS#1 v1.5; PS*: PSS, with a salt as long as the hash (as in JWS)
    pss: bool
    hash: type[hashes.SHA256] | type[hashes.SHA384] | type[hashes.SHA512]
    #: ES*: the curve the key must be on (ES256 ↔ P-256, ES384 ↔ P-384, ES512 ↔ P-521)
    curve: str | None = None

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.hash.name, data).digest()


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("ES256", "EC", False, hashes.SHA256, "secp256r1"),
        Algorithm("ES384", "EC", False, hashes.SHA384, "secp384r1"),
        Algorithm("ES512", "EC", False, hashes.SHA512, "secp521r1"),
        Algorithm("RS256", "RSA", False, hashes.SHA256),
        Algorithm("RS384", "RSA", False, hashes.SHA384),
        Algorithm("RS512", "RSA", False, hashes.SHA512),
        Algorithm("PS256", "RSA", True, hashes.SHA256),
        Algorithm("PS384", "RSA", True, hashes.SHA384),
        Algorithm("PS512", "RSA", True, hashes.SHA512),
    )
}


@dataclass(frozen=True)
class AuthToken:
    """A Web eID authentication token whose fields are well-formed (nothing is verified yet)."""

    certificate: x509.Certificate
    certificate_der: bytes
    algorithm: Algorithm
    signature: bytes
    format: str
    app_version: str


def signed_data(algorithm: Algorithm, *, origin: str, nonce: str) -> bytes:
    """``H(origin) ‖ H(nonce)``: what the card signs (Web eID token format specification)."""
    return algorithm.digest(origin.encode("utf-8")) + algorithm.digest(nonce.encode("utf-8"))


def _text(token: Mapping[str, object], field: str, limit: int) -> str:
    value = token.get(field)
    if not isinstance(value, str):
        what = "missing" if value is None else f"a {type(value).__name__}, not a string"
        raise refuse(Reason.MALFORMED_TOKEN, detail=f"'{field}' is {what}")
    if len(value) > limit:
        raise refuse(Reason.MALFORMED_TOKEN, detail=f"'{field}' is longer than {limit} characters")
    return value


def _base64(value: str, field: str) -> bytes:
    """Strict base64: the standard alphabet, padding optional (as the Web eID reference reads)."""
    text = value + "=" * (-len(value) % 4)
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise refuse(Reason.MALFORMED_TOKEN, detail=f"'{field}' is not base64") from None
    if not decoded:
        raise refuse(Reason.MALFORMED_TOKEN, detail=f"'{field}' is empty")
    return decoded


def parse_auth_token(value: object) -> AuthToken:
    """Check the token's shape and decode its fields (steps 1–5); ``CardRefused`` if malformed.

    Reasons: ``malformed_token`` (not an object, a field missing, of the wrong type, too long or
    not base64, an unsupported format), ``malformed_certificate`` (the certificate is not DER),
    ``unsupported_algorithm`` (not one of the nine listed algorithms).
    """
    # 1. an object (the web layer has already parsed the JSON body)
    if not isinstance(value, Mapping):
        raise refuse(Reason.MALFORMED_TOKEN, detail=f"a {type(value).__name__}, not an object")

    # 2. "format": the token format's type and major version, "web-eid:1" (any minor version)
    token_format = _text(value, "format", MAX_TEXT_CHARS)
    rest = token_format.removeprefix(FORMAT_PREFIX)
    if rest == token_format or rest[:1].isdigit():  # not web-eid:1, or web-eid:10, web-eid:11 …
        raise refuse(
            Reason.MALFORMED_TOKEN, detail=f"unsupported token format {token_format[:40]!r}"
        )
    app_version = _text(value, "appVersion", MAX_TEXT_CHARS)  # informational only

    # 3. "unverifiedCertificate": base64 of the DER certificate (not trusted: it is checked later)
    certificate_der = _base64(
        _text(value, "unverifiedCertificate", MAX_CERTIFICATE_CHARS), "unverifiedCertificate"
    )
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
    except Exception as exc:  # untrusted input: any parse error is a refusal
        raise refuse(Reason.MALFORMED_CERTIFICATE, detail=f"not a DER certificate: {exc}") from None

    # 4. "algorithm": one of RFC 7518 §3.3–3.5's ES*, RS*, PS* (INTERFACE §4)
    algorithm_name = _text(value, "algorithm", MAX_TEXT_CHARS)
    algorithm = ALGORITHMS.get(algorithm_name)
    if algorithm is None:
        raise refuse(
            Reason.UNSUPPORTED_ALGORITHM,
            detail=f"algorithm {algorithm_name[:20]!r} is not one of {', '.join(ALGORITHMS)}",
            certificate=certificate,
        )

    # 5. "signature": base64 of the card's signature
    signature = _base64(_text(value, "signature", MAX_SIGNATURE_CHARS), "signature")

    return AuthToken(
        certificate=certificate,
        certificate_der=certificate_der,
        algorithm=algorithm,
        signature=signature,
        format=token_format,
        app_version=app_version,
    )


def verify_signature(token: AuthToken, *, origin: str, nonce: str) -> None:
    """Verify the token's signature over ``H(origin) ‖ H(nonce)`` (steps 6–8).

    ``origin`` and ``nonce`` are the challenge's, from the provider's store. Reasons:
    ``algorithm_mismatch`` (the algorithm does not fit the certificate's key), ``bad_signature``.
    """
    certificate, algorithm = token.certificate, token.algorithm
    try:
        key = certificate.public_key()
    except Exception as exc:  # an unknown or broken key type
        raise refuse(
            Reason.ALGORITHM_MISMATCH,
            detail=f"{algorithm.name} with an unreadable public key: {exc}",
            certificate=certificate,
        ) from None

    # 6. the algorithm must fit the certificate's key: ES256 ↔ P-256, ES384 ↔ P-384,
    #    ES512 ↔ P-521, RS*/PS* ↔ RSA (the token says which algorithm; the key decides)
    if algorithm.family == "EC":
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != algorithm.curve:
            raise refuse(
                Reason.ALGORITHM_MISMATCH,
                detail=f"{algorithm.name} with a {_key_kind(key)} key",
                certificate=certificate,
            )
    elif not isinstance(key, rsa.RSAPublicKey):
        raise refuse(
            Reason.ALGORITHM_MISMATCH,
            detail=f"{algorithm.name} with a {_key_kind(key)} key",
            certificate=certificate,
        )

    # 7. reconstruct the signed data from the provider's own origin and nonce
    data = signed_data(algorithm, origin=origin, nonce=nonce)

    # 8. verify the signature with the certificate's public key; an EC signature is raw r ‖ s
    #    (as in JWS) and is re-encoded as DER for cryptography
    hash_algorithm = algorithm.hash()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(token.signature) != 2 * size:
                raise InvalidSignature(
                    f"{len(token.signature)} bytes, not the {2 * size} of raw r ‖ s"
                )
            r = int.from_bytes(token.signature[:size], "big")
            s = int.from_bytes(token.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hash_algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            scheme: padding.AsymmetricPadding = padding.PKCS1v15()
            if algorithm.pss:  # salt as long as the hash, as in JWS (RFC 7518 §3.5)
                salt = hash_algorithm.digest_size
                scheme = padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=salt)
            key.verify(token.signature, data, scheme, hash_algorithm)
    except Exception as exc:  # InvalidSignature, or a signature cryptography cannot even read
        why = str(exc) or type(exc).__name__
        raise refuse(
            Reason.BAD_SIGNATURE,
            detail=f"{algorithm.name} signature does not verify ({why})",
            certificate=certificate,
        ) from None


def verify_auth_token(value: object, *, origin: str, nonce: str) -> AuthToken:
    """Parse a token and verify its signature over the challenge: steps 1–8, not the certificate."""
    token = parse_auth_token(value)
    verify_signature(token, origin=origin, nonce=nonce)
    return token


def _key_kind(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    return type(key).__name__
