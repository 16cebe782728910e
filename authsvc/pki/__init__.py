"""Smartcard authentication, provider side: Web eID tokens, card certificates, challenges.

- :mod:`~authsvc.pki.webeid`: the Web eID authentication token and its signature (INTERFACE §4);
- :mod:`~authsvc.pki.certificates`: the card certificate's chain, validity and usage;
- :mod:`~authsvc.pki.revocation`: CRL and OCSP, failing closed (``AUTHSVC_CARD_REVOCATION``);
- :mod:`~authsvc.pki.challenges`: single-use, 5-minute challenges bound to a flow;
- :mod:`~authsvc.pki.revoked_cards`: the helpdesk's own list of revoked cards;
- :mod:`~authsvc.pki.service`: :class:`SmartcardVerifier`, all of the above in one call.

Every refusal is a :class:`CardRefused` (``400 invalid_card``) whose ``reason`` is a
:class:`Reason`; docs/smartcard.md lists them.
"""

from __future__ import annotations

from .certificates import CardCertificateValidator, ValidatedCertificate, load_trust_anchors
from .challenges import Challenge, consume_challenge, issue_challenge
from .errors import CardRefused, Reason
from .service import SmartcardVerifier

__all__ = [
    "CardCertificateValidator",
    "CardRefused",
    "Challenge",
    "Reason",
    "SmartcardVerifier",
    "ValidatedCertificate",
    "consume_challenge",
    "issue_challenge",
    "load_trust_anchors",
]
