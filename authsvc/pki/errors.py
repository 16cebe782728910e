"""Why a card is refused: one exception, one reason code per check, every refusal logged.

INTERFACE §4: a refused card is answered ``400 {"error": "invalid_card", "error_description": …}``
with the reason in the description. :class:`CardRefused` is that answer (an
:class:`~authsvc.errors.AuthsvcError`); ``.reason`` is the machine code of the check that failed
(:class:`Reason`), so that callers, tests and operators can tell the checks apart.

Every refusal is made by :func:`refuse`, which logs it once on the ``authsvc.pki`` logger at WARNING
with the reason, the certificate's issuer and serial when they are known, and — for operators — a
detail that says what failed (which URL, which step). The detail is never shown to the person and
never contains a signature, a nonce or a token.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from cryptography import x509

from ..errors import AuthsvcError
from ..metrics import card_refused

log = logging.getLogger("authsvc.pki")


class Reason(StrEnum):
    """The reason codes of :class:`CardRefused`, one per check (docs/smartcard.md lists them)."""

    # the authentication token (INTERFACE §4 "The smartcard challenge")
    MALFORMED_TOKEN = "malformed_token"  # noqa: S105 - a reason code, not a secret
    MALFORMED_CERTIFICATE = "malformed_certificate"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    ALGORITHM_MISMATCH = "algorithm_mismatch"
    BAD_SIGNATURE = "bad_signature"
    # the challenge (SECURITY "Smartcard": single-use, 5 minutes, bound to the flow)
    CHALLENGE_EXPIRED = "challenge_expired"
    CHALLENGE_USED = "challenge_used"
    # the certificate (INTERFACE §4: anchors, validity, key usage, EKU)
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    SELF_SIGNED = "self_signed"
    WRONG_KEY_USAGE = "wrong_key_usage"
    WRONG_EXTENDED_KEY_USAGE = "wrong_extended_key_usage"
    UNSUPPORTED_KEY = "unsupported_key"
    UNTRUSTED_ISSUER = "untrusted_issuer"
    # revocation (INTERFACE §1 AUTHSVC_CARD_REVOCATION, SECURITY "Smartcard")
    REVOKED_CRL = "revoked_crl"
    REVOKED_OCSP = "revoked_ocsp"
    REVOKED_HELPDESK = "revoked_helpdesk"
    REVOCATION_UNAVAILABLE = "revocation_unavailable"


#: What the person is told, per reason. Plain sentences: no URL, no serial, nothing from the token.
SENTENCES: dict[Reason, str] = {
    Reason.MALFORMED_TOKEN: "The card's authentication token is malformed.",
    Reason.MALFORMED_CERTIFICATE: "The card's certificate cannot be read.",
    Reason.UNSUPPORTED_ALGORITHM: "The card used a signature algorithm that is not supported.",
    Reason.ALGORITHM_MISMATCH: "The signature algorithm does not match the card's key.",
    Reason.BAD_SIGNATURE: "The card's signature does not match this sign-in challenge.",
    Reason.CHALLENGE_EXPIRED: "The sign-in challenge has expired; please start again.",
    Reason.CHALLENGE_USED: "The sign-in challenge was already used; please start again.",
    Reason.EXPIRED: "The card's certificate has expired.",
    Reason.NOT_YET_VALID: "The card's certificate is not valid yet.",
    Reason.SELF_SIGNED: "The card's certificate is self-signed.",
    Reason.WRONG_KEY_USAGE: "The card's certificate is not meant for digital signatures.",
    Reason.WRONG_EXTENDED_KEY_USAGE: "The card's certificate is not meant for authentication.",
    Reason.UNSUPPORTED_KEY: "The card's key is of a type or size that is not accepted.",
    Reason.UNTRUSTED_ISSUER: "The card was not issued by a trusted card authority.",
    Reason.REVOKED_CRL: "The card's certificate has been revoked.",
    Reason.REVOKED_OCSP: "The card's certificate has been revoked.",
    Reason.REVOKED_HELPDESK: "This card has been revoked by the helpdesk.",
    Reason.REVOCATION_UNAVAILABLE: (
        "The card's revocation status cannot be checked right now; please try again later."
    ),
}


class CardRefused(AuthsvcError):
    """A smartcard authentication was refused: ``400 invalid_card`` (INTERFACE §4).

    :param reason: the :class:`Reason` code of the failed check.
    :param description: the sentence for the person; the reason code is appended to it, so that
        ``error_description`` carries the reason as INTERFACE §4 asks.
    :param issuer: the certificate's issuer (RFC 4514), when known; for the log.
    :param serial: the certificate's serial number (lowercase hex), when known; for the log.
    :param detail: what an operator needs to act (which URL, which step); logged, never shown.
    """

    code = "invalid_card"
    status = 400

    def __init__(
        self,
        reason: str,
        description: str,
        *,
        issuer: str | None = None,
        serial: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(f"{description} (reason: {reason})")
        self.reason = reason
        self.issuer = issuer
        self.serial = serial
        self.detail = detail


def serial_hex(serial_number: int) -> str:
    """A certificate serial number as the helpdesk and the logs write it: lowercase hex."""
    return format(serial_number, "x")


def refuse(
    reason: Reason,
    *,
    detail: str | None = None,
    certificate: x509.Certificate | None = None,
    issuer: str | None = None,
    serial: str | None = None,
) -> CardRefused:
    """Log a refusal once (``authsvc.pki``, WARNING) and return the exception to raise.

    ``certificate`` (or ``issuer`` and ``serial``) identifies the card in the log line.
    """
    if certificate is not None:
        issuer = issuer or _issuer_of(certificate)
        serial = serial or serial_hex(certificate.serial_number)
    log.warning(
        "smartcard refused: reason=%s issuer=%r serial=%s%s",
        reason.value,
        issuer,
        serial,
        f": {detail}" if detail else "",
        extra={"card_reason": reason.value, "card_issuer": issuer, "card_serial": serial},
    )
    card_refused(reason.value)
    return CardRefused(reason.value, SENTENCES[reason], issuer=issuer, serial=serial, detail=detail)


def _issuer_of(certificate: x509.Certificate) -> str | None:
    try:
        return certificate.issuer.rfc4514_string()
    except ValueError:  # a name cryptography cannot render: the serial still identifies the card
        return None
