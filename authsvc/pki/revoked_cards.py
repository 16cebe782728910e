"""The helpdesk's own list of revoked card certificates (INTERFACE §5, SECURITY "Smartcard").

A card the helpdesk revokes is refused with ``revoked_helpdesk`` at once, whatever its card
authority's CRL or OCSP responder say (they learn of it later, if ever). Entries are keyed by the
certificate's issuer (RFC 4514) and serial number (lowercase hex), exactly as
:class:`~authsvc.pki.certificates.ValidatedCertificate` carries them.

Adding an entry writes an audit event in the same transaction (SECURITY "Audit"). Adding one twice
is harmless: the second time changes nothing and records nothing (an ``INSERT … ON CONFLICT DO
NOTHING``, so that two agents revoking the same card at once do not collide).
"""

from __future__ import annotations

import string

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..audit import service as audit
from ..audit.tags import EventTag
from ..clock import Clock, system_clock
from ..errors import InvalidInput
from .models import RevocationReason, RevokedCard

_SERIAL_NOISE = str.maketrans("", "", ": \t")
#: on every smartcard verification's path: built once, run on the session's connection
_IS_REVOKED = select(RevokedCard.id).where(
    RevokedCard.issuer == bindparam("issuer"), RevokedCard.serial == bindparam("serial")
)


def normalize_serial(serial: str) -> str:
    """A serial as typed or printed (``0A:1B``, ``0a1b``) → lowercase hex, no leading zeros."""
    text = serial.translate(_SERIAL_NOISE).lower()
    if not text or not set(text) <= set(string.hexdigits.lower()) or len(text) > 64:
        raise InvalidInput(f"not a certificate serial number in hex: {serial!r}")
    return text.lstrip("0") or "0"


def revoke_card(
    session: Session,
    *,
    issuer: str,
    serial: str,
    reason: str,
    actor: str,
    clock: Clock = system_clock,
    subject: str | None = None,
) -> tuple[RevokedCard, bool]:
    """Put a certificate on the helpdesk list, inside the caller's transaction.

    Returns the entry and whether it is new; only a new entry is audited
    (``smartcard:certificate:revoked``, with ``subject`` or ``certificate:<serial>``).
    """
    try:
        why = RevocationReason(reason)
    except ValueError:
        choices = ", ".join(r.value for r in RevocationReason)
        raise InvalidInput(f"reason must be one of {choices}, not {reason!r}") from None
    if not issuer or len(issuer) > 1024:
        raise InvalidInput("an issuer name (RFC 4514) of at most 1024 characters is needed")
    number = normalize_serial(serial)
    now = clock.now()
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    new_id = session.execute(
        insert(RevokedCard)
        .values(issuer=issuer, serial=number, revoked_at=now, reason=why.value, revoked_by=actor)
        .on_conflict_do_nothing(index_elements=["issuer", "serial"])
        .returning(RevokedCard.id)
    ).scalar_one_or_none()
    entry = find_revoked_card(session, issuer, number)
    if entry is None:  # pragma: no cover - the row was inserted or was already there
        raise RuntimeError("the revoked card entry vanished")
    if new_id is None:
        return entry, False
    audit.record(
        session,
        EventTag.CARD_CERTIFICATE_REVOKED,
        actor=actor,
        subject=subject or f"certificate:{number}",
        data={"issuer": issuer, "serial": number, "reason": why.value},
        clock=clock,
    )
    return entry, True


def find_revoked_card(session: Session, issuer: str, serial: str) -> RevokedCard | None:
    """The helpdesk's entry for this certificate, if it revoked it (``serial`` in lowercase hex)."""
    return session.scalars(
        select(RevokedCard).where(RevokedCard.issuer == issuer, RevokedCard.serial == serial)
    ).one_or_none()


def is_revoked_by_helpdesk(session: Session, issuer: str, serial: str) -> bool:
    """Whether the helpdesk revoked this certificate (to re-check inside a unit of work)."""
    session.flush()
    found = session.connection().execute(_IS_REVOKED, {"issuer": issuer, "serial": serial})
    return found.first() is not None
