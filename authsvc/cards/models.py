"""A smartcard bound to an account."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base


class CardStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class Card(Base):
    """A smartcard bound to an account: its authentication certificate, as presented at binding.

    A certificate is bound once, to one account (unique issuer + serial, unique fingerprint).
    """

    __tablename__ = "cards"
    __table_args__ = (
        UniqueConstraint("issuer", "serial", name="uq_cards_issuer_serial"),
        CheckConstraint("status IN ('active', 'revoked')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="RESTRICT"), index=True
    )
    #: the issuer's distinguished name (RFC 4514) and the serial number (lowercase hex)
    issuer: Mapped[str] = mapped_column(String(500))
    serial: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(500))
    #: SHA-256 of the DER certificate, hex
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    certificate: Mapped[bytes] = mapped_column(LargeBinary)
    not_after: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default=CardStatus.ACTIVE)
    bound_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
