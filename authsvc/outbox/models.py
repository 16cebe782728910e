"""One row per message to deliver."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    #: ``mail`` or ``backchannel_logout``: which handler delivers it
    kind: Mapped[str] = mapped_column(String(32))
    #: the message, encrypted (Fernet, outbox key): a mail may carry a one-time code
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: what the operator sees: recipient and subject, never the content
    summary: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    #: a worker that claimed the message owns it until then (a crashed worker's claim expires)
    claimed_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(index=True)
    #: given up after the retry period, or past ``expires_at`` (the payload is then erased)
    abandoned_at: Mapped[datetime | None]
    #: when the message becomes useless (e.g. a one-time code's expiry): abandoned, not retried
    expires_at: Mapped[datetime | None]
