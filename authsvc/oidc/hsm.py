"""Signing keys on a PKCS#11 token (SoftHSM2 here; an HSM in production), when configured.

The key pair is generated on the token (sensitive, never extractable), labelled with its ``kid``;
the database keeps only the public key. One session is opened and logged in once per process and
reused (``C_Login`` costs about a millisecond); PKCS#11 sessions are not thread-safe, so signing is
serialised by a lock. SoftHSM 2.6 has no ``CKM_ECDSA_SHA256``: the digest is computed here and
signed with ``CKM_ECDSA``, whose output is already JWS's raw ``r ‖ s``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from typing import Any

from cryptography.hazmat.primitives import serialization


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenKeyStore:
    """Generates and uses signing keys on one PKCS#11 token."""

    def __init__(self, module: str, token_label: str, pin: str) -> None:
        self.module = module
        self.token_label = token_label
        self._pin = pin
        self._lock = threading.Lock()
        self._session: Any = None
        self._keys: dict[str, Any] = {}

    def _open(self) -> Any:
        if self._session is None:
            import pkcs11

            lib = pkcs11.lib(self.module)
            token = lib.get_token(token_label=self.token_label)
            self._session = token.open(rw=True, user_pin=self._pin)
        return self._session

    def generate(self, alg: str, kid: str) -> dict[str, Any]:
        """A new key pair on the token; returns the public key as a JWK."""
        from pkcs11 import Attribute, KeyType
        from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
        from pkcs11.util.rsa import encode_rsa_public_key

        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DERIVE: False,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
        }
        public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True}
        with self._lock:
            session = self._open()
            if alg == "ES256":
                params = session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                    local=True,
                )
                public, _ = params.generate_keypair(
                    store=True,
                    id=kid.encode(),
                    label=kid,
                    public_template=public_template,
                    private_template=private_template,
                )
                spki = encode_ec_public_key(public)
            elif alg == "RS256":
                public, _ = session.generate_keypair(
                    KeyType.RSA,
                    2048,
                    store=True,
                    id=kid.encode(),
                    label=kid,
                    public_template=public_template,
                    private_template=private_template,
                )
                spki = encode_rsa_public_key(public)
            else:
                raise ValueError(f"unsupported signing algorithm {alg!r}")
        pem = serialization.load_der_public_key(spki).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        from joserfc.jwk import ECKey, RSAKey

        parameters: Any = {"kid": kid, "alg": alg, "use": "sig"}
        key = (ECKey if alg == "ES256" else RSAKey).import_key(pem, parameters=parameters)
        return dict(key.as_dict(private=False))

    def sign_jwt(self, kid: str, alg: str, header: dict[str, Any], claims: dict[str, Any]) -> str:
        from pkcs11 import Mechanism, ObjectClass

        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        ).encode("ascii")
        with self._lock:
            session = self._open()
            key = self._keys.get(kid)
            if key is None:
                key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=kid)
                self._keys[kid] = key
            if alg == "ES256":
                signature = key.sign(
                    hashlib.sha256(signing_input).digest(), mechanism=Mechanism.ECDSA
                )
            else:
                signature = key.sign(signing_input, mechanism=Mechanism.SHA256_RSA_PKCS)
        return signing_input.decode("ascii") + "." + _b64(signature)


def from_settings(settings: Any) -> TokenKeyStore | None:
    """The token key store if ``AUTHSVC_SIGNING_KEY_TOKEN`` is set, else None (keys in the DB)."""
    if not settings.signing_key_token:
        return None
    return TokenKeyStore(
        settings.pkcs11_module, settings.signing_key_token, settings.signing_key_pin
    )
