"""Validation of a card's authentication certificate (INTERFACE §4, SECURITY "Smartcard").

The provider accepts a certificate only if it "chains to ``AUTHSVC_CARD_TRUST_ANCHORS``, is within
its validity, has key usage digitalSignature, has the client-authentication EKU *or no EKU at
all* (Luxembourg cards carry none), is not revoked (per ``AUTHSVC_CARD_REVOCATION``)" — INTERFACE
§4. :meth:`CardCertificateValidator.validate` makes these checks in this order, each with its own
reason code (:class:`~authsvc.pki.errors.Reason`):

1. the bytes are a DER X.509 certificate ......................... ``malformed_certificate``
2. the validity period holds at the injected clock's now ......... ``expired`` / ``not_yet_valid``
3. the certificate is not self-signed ............................ ``self_signed``
4. keyUsage is present and has digitalSignature .................. ``wrong_key_usage``
5. extendedKeyUsage is absent, or has clientAuth ................. ``wrong_extended_key_usage``
6. the key is RSA ≥ 2048 bits or EC on P-256/P-384/P-521 ......... ``unsupported_key``
7. a chain to a trust anchor (``cryptography.x509.verification``) . ``untrusted_issuer``
8. the revocation check of ``AUTHSVC_CARD_REVOCATION`` ........... ``revoked_crl`` /
   ``revoked_ocsp`` / ``revocation_unavailable`` (see :mod:`authsvc.pki.revocation`)

Steps 2–6 are cheap local checks made first so that each failure gets its own reason; the chain
verifier enforces 4 and 5 again (its extension policy), so that nothing depends on their order.
The helpdesk's own list (``revoked_helpdesk``) needs the database and is checked by
:class:`authsvc.pki.service.SmartcardVerifier`.

The anchors are the root *and* issuing CAs: a card presents only its own certificate, so its
issuing CA must be in the file, and it is trusted as an anchor in its own right.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
)

from ..clock import Clock
from ..errors import ConfigError
from .errors import Reason, refuse, serial_hex
from .revocation import RevocationChecker

TRUST_ANCHORS_VARIABLE = "AUTHSVC_CARD_TRUST_ANCHORS"

#: A card certificate is ~1–2 KB; anything far larger is not one (and is not parsed).
MAX_CERTIFICATE_BYTES = 16 * 1024
#: INTERFACE §4 algorithms: RS*/PS* need RSA, ES256/ES384/ES512 need these curves.
ACCEPTED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
MIN_RSA_BITS = 2048


# --- trust anchors -------------------------------------------------------------------------------


def load_trust_anchors(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """The CA certificates of ``AUTHSVC_CARD_TRUST_ANCHORS`` (a PEM file: root and issuing CAs).

    A missing, unreadable, empty or garbage file, or a certificate in it that is not a CA, raises
    :class:`~authsvc.errors.ConfigError` with one line naming the variable (INTERFACE §1).
    """
    where = f"{TRUST_ANCHORS_VARIABLE}: {path}"
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    if not data.strip():
        raise ConfigError(f"{where} is empty; expected the PEM certificates of the card CAs")
    try:
        anchors = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(
            f"{where} holds no readable PEM certificate (expected the card CAs, "
            "'-----BEGIN CERTIFICATE-----' blocks)"
        ) from None
    for number, anchor in enumerate(anchors, start=1):
        try:
            constraints = anchor.extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca = constraints.ca
            subject = anchor.subject.rfc4514_string()
        except x509.ExtensionNotFound:
            is_ca, subject = False, anchor.subject.rfc4514_string()
        except ValueError as exc:
            raise ConfigError(f"{where}: certificate {number} cannot be read: {exc}") from None
        if not is_ca:
            raise ConfigError(
                f"{where}: certificate {number} ({subject}) is not a CA certificate "
                "(basicConstraints cA); only card CAs belong in this file"
            )
    return anchors


# --- the result ----------------------------------------------------------------------------------


_HOLDER_OIDS = {
    NameOID.COMMON_NAME: "common_name",
    NameOID.GIVEN_NAME: "given_name",
    NameOID.SURNAME: "surname",
    NameOID.SERIAL_NUMBER: "serial_number",
}


@dataclass(frozen=True)
class ValidatedCertificate:
    """A card certificate that passed every check, and what the rest of authsvc needs from it.

    The descriptive fields are computed from the certificate when first read (rendering names
    costs more than the rest of a verification's Python code; most callers read few of them).
    """

    certificate: x509.Certificate
    #: the card's certificate first, then its issuer, up to the trust anchor that vouches for it
    chain: tuple[x509.Certificate, ...]
    #: the serial number, lowercase hex
    serial: str
    not_valid_after: datetime

    @property
    def issuer_certificate(self) -> x509.Certificate:
        return self.chain[1]

    @cached_property
    def issuer(self) -> str:
        """The issuer's name, RFC 4514 (what the helpdesk list and ``revoke-card`` carry)."""
        return self.certificate.issuer.rfc4514_string()

    @cached_property
    def subject(self) -> str:
        """The holder's subject, RFC 4514."""
        return self.certificate.subject.rfc4514_string()

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate's DER, lowercase hex."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    @cached_property
    def _holder(self) -> dict[str, str]:
        names: dict[str, str] = {}
        for attribute in self.certificate.subject:
            field = _HOLDER_OIDS.get(attribute.oid)
            if field and field not in names and isinstance(attribute.value, str):
                names[field] = attribute.value
        return names

    @property
    def common_name(self) -> str | None:
        return self._holder.get("common_name")

    @property
    def given_name(self) -> str | None:
        return self._holder.get("given_name")

    @property
    def surname(self) -> str | None:
        return self._holder.get("surname")

    @property
    def serial_number(self) -> str | None:
        """The subject's serialNumber attribute, when present (an identifier of the holder)."""
        return self._holder.get("serial_number")


# --- the validator -------------------------------------------------------------------------------


def _key_usage_policy(_policy: Policy, _cert: x509.Certificate, usage: x509.KeyUsage) -> None:
    if not usage.digital_signature:
        raise ValueError("keyUsage lacks digitalSignature")


def _eku_policy(
    _policy: Policy, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None
) -> None:
    if eku is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise ValueError("extendedKeyUsage present without clientAuth")


def _end_entity_policy() -> ExtensionPolicy:
    """The Web PKI defaults for an end entity, adapted to card certificates (INTERFACE §4).

    - keyUsage must be present with digitalSignature;
    - extendedKeyUsage may be absent (Luxembourg cards carry none); when present it must hold
      clientAuth;
    - subjectAltName may be absent (card certificates name their holder in the subject);
    - authorityKeyIdentifier may be absent: it helps finding the issuer, it proves nothing (the
      issuer's signature does), and some card profiles omit it.
    """
    return (
        ExtensionPolicy.webpki_defaults_ee()
        .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _key_usage_policy)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_policy)
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
    )


class CardCertificateValidator:
    """Checks a card's authentication certificate against the trust anchors (module docstring).

    :param anchors: the CA certificates to trust (see :func:`load_trust_anchors`).
    :param revocation: the revocation check of ``AUTHSVC_CARD_REVOCATION``.
    :param clock: the time of every check (validity, chain, revocation freshness).

    Thread-safe: it holds no per-request state.
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        revocation: RevocationChecker,
        clock: Clock,
    ) -> None:
        if not anchors:
            raise ValueError("at least one trust anchor is needed")
        self.anchors = tuple(anchors)
        self._store = Store(list(self.anchors))
        self._revocation = revocation
        self._clock = clock
        self._ca_policy = ExtensionPolicy.webpki_defaults_ca()
        self._ee_policy = _end_entity_policy()

    def validate(self, certificate: bytes | x509.Certificate) -> ValidatedCertificate:
        """The checks of the module docstring, in order; ``CardRefused`` at the first that fails."""
        # 1. a DER certificate whose fields can all be read
        cert = certificate if isinstance(certificate, x509.Certificate) else _parse(certificate)
        try:
            # each access to .issuer or .subject parses a new Name: read them once
            issuer_name, subject_name = cert.issuer, cert.subject
            extensions = cert.extensions
            not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        except Exception as exc:  # untrusted input: any parse error is a refusal
            raise refuse(
                Reason.MALFORMED_CERTIFICATE, detail=f"unreadable field: {exc}", certificate=cert
            ) from None
        serial = serial_hex(cert.serial_number)

        # 2. validity period, at the injected clock's now (RFC 5280 §4.1.2.5: both ends inclusive)
        now = self._clock.now()
        if now < not_before:
            raise refuse(
                Reason.NOT_YET_VALID,
                detail=f"valid from {not_before.isoformat()}, now is {now.isoformat()}",
                certificate=cert,
            )
        if now > not_after:
            raise refuse(
                Reason.EXPIRED,
                detail=f"expired at {not_after.isoformat()}, now is {now.isoformat()}",
                certificate=cert,
            )

        # 3. self-signed: issuer and subject are the same name and its own key verifies it
        if issuer_name == subject_name and _verifies_itself(cert):
            raise refuse(Reason.SELF_SIGNED, certificate=cert)

        # 4. keyUsage with digitalSignature (INTERFACE §4); a card certificate always carries it
        try:
            usage = extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            raise refuse(
                Reason.WRONG_KEY_USAGE, detail="no keyUsage extension", certificate=cert
            ) from None
        if not usage.digital_signature:
            raise refuse(
                Reason.WRONG_KEY_USAGE, detail="keyUsage lacks digitalSignature", certificate=cert
            )

        # 5. extendedKeyUsage: absent (Luxembourg cards), or with clientAuth (INTERFACE §4)
        try:
            eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = None
        if eku is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            purposes = ", ".join(oid.dotted_string for oid in eku)
            raise refuse(
                Reason.WRONG_EXTENDED_KEY_USAGE,
                detail=f"extendedKeyUsage without clientAuth: {purposes}",
                certificate=cert,
            )

        # 6. a key the listed algorithms can use, of a safe size
        _check_key(cert)

        # 7. a chain to a trust anchor, valid now, under the card extension policy
        try:
            verified = (
                PolicyBuilder()
                .store(self._store)
                .time(now)
                .extension_policies(ca_policy=self._ca_policy, ee_policy=self._ee_policy)
                .build_client_verifier()
                .verify(cert, [])
            )
        except Exception as exc:  # VerificationError, or anything the verifier trips on: refused
            raise refuse(
                Reason.UNTRUSTED_ISSUER,
                detail=f"no chain to {TRUST_ANCHORS_VARIABLE}: {exc}",
                certificate=cert,
            ) from None
        chain = tuple(verified.chain)
        if len(chain) < 2:  # the card itself is an anchor: load_trust_anchors refuses that
            raise refuse(
                Reason.UNTRUSTED_ISSUER,
                detail="the certificate is itself an anchor",
                certificate=cert,
            )

        # 8. revocation, against the issuer the chain was built with
        self._revocation.check(cert, chain[1])

        return ValidatedCertificate(
            certificate=cert, chain=chain, serial=serial, not_valid_after=not_after
        )


def _parse(der: bytes) -> x509.Certificate:
    if not isinstance(der, bytes | bytearray) or not der:
        raise refuse(Reason.MALFORMED_CERTIFICATE, detail="no certificate bytes")
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise refuse(
            Reason.MALFORMED_CERTIFICATE,
            detail=f"{len(der)} bytes, more than a card certificate ({MAX_CERTIFICATE_BYTES})",
        )
    try:
        return x509.load_der_x509_certificate(bytes(der))
    except Exception as exc:  # untrusted input: any parse error is a refusal
        raise refuse(Reason.MALFORMED_CERTIFICATE, detail=f"not a DER certificate: {exc}") from None


def _verifies_itself(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # any failure means "not self-signed"; the chain decides
        return False
    return True


def _check_key(cert: x509.Certificate) -> None:
    try:
        key = cert.public_key()
    except Exception as exc:  # an unknown or broken key type
        raise refuse(
            Reason.UNSUPPORTED_KEY, detail=f"unreadable public key: {exc}", certificate=cert
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise refuse(
                Reason.UNSUPPORTED_KEY,
                detail=f"RSA key of {key.key_size} bits, fewer than {MIN_RSA_BITS}",
                certificate=cert,
            )
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ACCEPTED_CURVES:
            raise refuse(
                Reason.UNSUPPORTED_KEY, detail=f"EC key on curve {key.curve.name}", certificate=cert
            )
        return
    raise refuse(
        Reason.UNSUPPORTED_KEY, detail=f"{type(key).__name__} is not RSA or EC", certificate=cert
    )
