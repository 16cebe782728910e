"""The activation letter: a one-time code sent on paper, stored only as a keyed hash."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base

#: SECURITY "Guessing and enumeration": at most 5 wrong codes per letter, then it is locked.
MAX_FAILED_ATTEMPTS = 5


class LetterState(StrEnum):
    ISSUED = "issued"
    USED = "used"
    SUPERSEDED = "superseded"
    LOCKED = "locked"
    EXPIRED = "expired"


class ActivationLetter(Base):
    __tablename__ = "activation_letters"
    __table_args__ = (
        # At most one open letter per professional, whatever the interleaving of issuers.
        Index(
            "uq_activation_letters_open_per_professional",
            "professional_id",
            unique=True,
            postgresql_where=text("used_at IS NULL AND superseded_at IS NULL"),
            sqlite_where=text("used_at IS NULL AND superseded_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    professional_id: Mapped[int] = mapped_column(
        ForeignKey("professionals.id", ondelete="RESTRICT"), index=True
    )
    #: HMAC-SHA-256 (hex) of the normalised code under the activation-code key; never the code.
    code_hash: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    failed_attempts: Mapped[int] = mapped_column(default=0)
    used_at: Mapped[datetime | None]
    superseded_at: Mapped[datetime | None]
    issued_by: Mapped[str] = mapped_column(String(200))

    def state(self, now: datetime) -> LetterState:
        if self.used_at is not None:
            return LetterState.USED
        if self.superseded_at is not None:
            return LetterState.SUPERSEDED
        if self.failed_attempts >= MAX_FAILED_ATTEMPTS:
            return LetterState.LOCKED
        if now >= self.expires_at:
            return LetterState.EXPIRED
        return LetterState.ISSUED

    def is_usable(self, now: datetime) -> bool:
        return self.state(now) is LetterState.ISSUED
