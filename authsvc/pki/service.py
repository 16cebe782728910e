"""The provider side of smartcard authentication, in one call (INTERFACE §4, SECURITY "Smartcard").

:meth:`SmartcardVerifier.verify` is what activation and sign-in call with a flow's ``auth_token``:

1. **consume the flow's challenge** (:func:`~authsvc.pki.challenges.consume_challenge`) in a
   short transaction of its own, committed whatever follows, so that the challenge is single-use
   even when the verification fails; the helpdesk list is looked up in the same transaction;
2. **verify the token's signature** over the challenge, with ``origin = settings.issuer_origin``
   (:mod:`authsvc.pki.webeid`);
3. **validate the certificate**: chain to ``AUTHSVC_CARD_TRUST_ANCHORS``, validity, key usage,
   revocation (:class:`~authsvc.pki.certificates.CardCertificateValidator`);
4. **the helpdesk's own list** (:mod:`authsvc.pki.revoked_cards`): refused with
   ``revoked_helpdesk`` — reported only to a token that passed 2 and 3.

Steps 2–4 run with no database transaction open: a CRL or OCSP fetch can take seconds and must not
hold SQLite's write lock or a PostgreSQL connection meanwhile. This is why :meth:`verify` takes
the :class:`~authsvc.db.Database`, not a session: inside the caller's unit of work a refusal would
roll the consumption back and make the challenge reusable.

The trust anchors are read once and read again when the file changes (its mtime, size or inode);
if the new file cannot be used, verification fails with a ``ConfigError`` naming
``AUTHSVC_CARD_TRUST_ANCHORS`` — it never falls back to the anchors it replaced.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from cryptography import x509

from ..clock import Clock
from ..config import Settings
from ..db import Database
from ..errors import ConfigError
from .certificates import (
    TRUST_ANCHORS_VARIABLE,
    CardCertificateValidator,
    ValidatedCertificate,
    load_trust_anchors,
)
from .challenges import Challenge, consume_challenge
from .errors import CardRefused, Reason, refuse, serial_hex
from .revocation import RevocationChecker, revocation_checker
from .revoked_cards import is_revoked_by_helpdesk
from .webeid import parse_auth_token, verify_signature

log = logging.getLogger("authsvc.pki")


class TrustAnchorFile:
    """The anchors of ``AUTHSVC_CARD_TRUST_ANCHORS``, cached until the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._anchors: list[x509.Certificate] = []

    def _current_stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise ConfigError(f"{TRUST_ANCHORS_VARIABLE}: {self.path} does not exist") from None
        except OSError as exc:
            raise ConfigError(
                f"{TRUST_ANCHORS_VARIABLE}: {self.path}: cannot read it: {exc.strerror or exc}"
            ) from None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> tuple[tuple[int, int, int], list[x509.Certificate]]:
        """The anchors and the file stamp they were read at; read again if the file changed."""
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return stamp, self._anchors
        with self._lock:
            if stamp != self._stamp:
                try:
                    anchors = load_trust_anchors(self.path)
                except ConfigError as exc:
                    log.error("card trust anchors unusable, every card is refused: %s", exc)
                    raise
                self._stamp, self._anchors = stamp, anchors
                log.info(
                    "card trust anchors: %d CA certificate(s) from %s", len(anchors), self.path
                )
            return self._stamp, self._anchors


class SmartcardVerifier:
    """Verifies Web eID authentication tokens against a flow's challenge (module docstring).

    :param settings: ``issuer_origin``, ``card_trust_anchors``, ``card_revocation``,
        ``crl_max_age``.
    :param clock: the time of every check.
    :param revocation: the revocation check; by default the one ``settings.card_revocation``
        names (its CRL cache lives as long as this object: build one per process).
    :param anchors_path: the anchors file, if not ``settings.card_trust_anchors``.

    Thread-safe; the web layer, the CLI and the tests each build one and keep it.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        revocation: RevocationChecker | None = None,
        anchors_path: Path | None = None,
    ) -> None:
        self.origin = settings.issuer_origin
        self._clock = clock
        self._revocation = revocation or revocation_checker(
            settings.card_revocation, clock=clock, crl_max_age=settings.crl_max_age
        )
        self._anchors = TrustAnchorFile(anchors_path or settings.card_trust_anchors)
        self._validator: tuple[tuple[int, int, int], CardCertificateValidator] | None = None

    def validator(self) -> CardCertificateValidator:
        """The certificate validator over the current anchors (rebuilt when the file changes)."""
        stamp, anchors = self._anchors.load()
        current = self._validator
        if current is None or current[0] != stamp:
            current = (stamp, CardCertificateValidator(anchors, self._revocation, self._clock))
            self._validator = current
        return current[1]

    def verify(self, db: Database, flow_id: str, auth_token: object) -> ValidatedCertificate:
        """Consume the flow's challenge, then verify ``auth_token`` against it (module docstring).

        Raises ``CardRefused`` (``400 invalid_card``) with the reason of the first failed check.
        """
        # 1. consume the challenge, committed whatever follows; look the card up on the helpdesk
        #    list meanwhile (one short transaction instead of two)
        malformed: CardRefused | None = None
        revoked_by_helpdesk = False
        with db.transaction() as session:
            challenge = consume_challenge(session, flow_id, self._clock)  # refusal: nothing to undo
            try:
                token = parse_auth_token(auth_token)
            except CardRefused as exc:
                malformed = exc  # raised after the commit, so that the challenge stays consumed
            else:
                issuer, serial = _issuer_and_serial(token.certificate)
                if issuer is not None:
                    revoked_by_helpdesk = is_revoked_by_helpdesk(session, issuer, serial)
        if malformed is not None:
            raise malformed

        # 2. the signature over H(origin) ‖ H(nonce), 3. the certificate
        verify_signature(token, origin=self.origin, nonce=challenge.nonce)
        card = self.validator().validate(token.certificate)

        # 4. the helpdesk's own list
        if revoked_by_helpdesk:
            raise refuse(
                Reason.REVOKED_HELPDESK,
                detail="on the helpdesk's list of revoked cards",
                certificate=token.certificate,
            )
        return card

    def verify_token(self, challenge: Challenge, auth_token: object) -> ValidatedCertificate:
        """Steps 2 and 3 alone, for a challenge the caller consumed (no database, no helpdesk)."""
        token = parse_auth_token(auth_token)
        verify_signature(token, origin=self.origin, nonce=challenge.nonce)
        return self.validator().validate(token.certificate)


def _issuer_and_serial(cert: x509.Certificate) -> tuple[str | None, str]:
    serial = serial_hex(cert.serial_number)
    try:
        return cert.issuer.rfc4514_string(), serial
    except ValueError:  # unreadable: the certificate checks will refuse it
        return None, serial
