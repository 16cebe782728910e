"""The smartcard step of a flow (activation now, sign-in later), over :mod:`authsvc.pki`.

Issues a flow's challenge in a short transaction of its own, and verifies the token the card
signed with :class:`~authsvc.pki.service.SmartcardVerifier` (which consumes the challenge first,
committed, so that it is single-use even when the verification fails).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..pki.certificates import ValidatedCertificate
from ..pki.challenges import Challenge, issue_challenge
from ..pki.service import SmartcardVerifier

if TYPE_CHECKING:
    from ..app import Services


class SmartcardAdapter:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.verifier = SmartcardVerifier(services.settings, services.clock)

    def issue_challenge(self, flow_id: str) -> Challenge:
        with self.services.db.transaction() as session:
            return issue_challenge(
                session, flow_id, self.services.settings.issuer_origin, self.services.clock
            )

    def check_card(self, flow_id: str, auth_token: Mapping[str, Any]) -> ValidatedCertificate:
        return self.verifier.verify(self.services.db, flow_id, auth_token)
