"""Smartcard challenges and the helpdesk's own list of revoked card certificates.

``smartcard_challenges``: SECURITY "Smartcard" — 32 random bytes, single-use, 5 minutes, bound to
the flow and to the provider's origin. A flow's *current* challenge is its newest one; only it can
be consumed (see :mod:`authsvc.pki.challenges`).

``revoked_cards``: the certificates the helpdesk revoked (INTERFACE §5), by issuer and serial, as
the card authority's CRL would list them; refused with ``revoked_helpdesk`` whatever the CRL or
OCSP say.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base

#: base64 of 32 bytes
NONCE_LENGTH = 44
FLOW_ID_LENGTH = 64


class SmartcardChallenge(Base):
    __tablename__ = "smartcard_challenges"

    # An increasing integer: the newest challenge of a flow is the one with the largest id.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    flow_id: Mapped[str] = mapped_column(String(FLOW_ID_LENGTH), index=True)
    nonce: Mapped[str] = mapped_column(String(NONCE_LENGTH))
    #: ``scheme://host[:port]`` of the issuer, which the card signs with the nonce
    origin: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    consumed_at: Mapped[datetime | None]


class RevocationReason(StrEnum):
    LOST = "lost"
    STOLEN = "stolen"
    DAMAGED = "damaged"
    OTHER = "other"


class RevokedCard(Base):
    __tablename__ = "revoked_cards"
    __table_args__ = (
        UniqueConstraint("issuer", "serial", name="uq_revoked_cards_issuer_serial"),
        CheckConstraint("reason IN ('lost', 'stolen', 'damaged', 'other')", name="reason"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: the certificate's issuer, RFC 4514 (as ``ValidatedCertificate.issuer``)
    issuer: Mapped[str] = mapped_column(String(1024))
    #: the certificate's serial number, lowercase hex (as ``ValidatedCertificate.serial``)
    serial: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(16))
    #: the actor, as in the audit trail (``staff:<id>``, ``cli:<user>``)
    revoked_by: Mapped[str] = mapped_column(String(200))
