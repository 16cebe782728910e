"""An independent check of a Web eID authentication token, with `cryptography` only.

Deliberately not the agent's code: the certificate's public key must verify the signature over
``H(origin) ‖ H(nonce)`` (INTERFACE §4), an EC signature being raw ``r ‖ s``.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

HASH = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def _h(algorithm: hashes.HashAlgorithm, text: str) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(text.encode("utf-8"))
    return digest.finalize()


def verify_token(token: dict[str, Any], origin: str, nonce: str) -> x509.Certificate:
    """Raise (``InvalidSignature``, ``AssertionError``) unless ``token`` is valid; its certificate."""
    assert set(token) == {
        "unverifiedCertificate",
        "algorithm",
        "signature",
        "format",
        "appVersion",
    }, token
    assert token["format"] == "web-eid:1.0"
    assert token["appVersion"]
    certificate = x509.load_der_x509_certificate(base64.b64decode(token["unverifiedCertificate"]))
    algorithm = token["algorithm"]
    hash_algorithm = HASH[algorithm[2:]]()
    data = _h(hash_algorithm, origin) + _h(hash_algorithm, nonce)
    signature = base64.b64decode(token["signature"])
    public = certificate.public_key()
    if algorithm.startswith("ES"):
        assert isinstance(public, ec.EllipticCurvePublicKey)
        size = (public.curve.key_size + 7) // 8
        assert len(signature) == 2 * size, "an EC signature is raw r ‖ s"
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        public.verify(utils.encode_dss_signature(r, s), data, ec.ECDSA(hash_algorithm))
    else:
        assert algorithm.startswith("RS")
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
    return certificate
