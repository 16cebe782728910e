"""The persisted activation flow (see :mod:`authsvc.activation.states` for its state machine)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base


class ActivationFlow(Base):
    """One person's way through the activation steps, resumable until it expires.

    Bound to the browser that started it: ``binding_hash`` is the keyed hash of a random secret
    kept in an HttpOnly cookie; state-changing requests also carry ``csrf_token``.
    """

    __tablename__ = "activation_flows"

    #: random, 256 bits, URL-safe (INTERFACE §4: at least 128 bits)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    letter_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("activation_letters.id", ondelete="RESTRICT"), index=True
    )
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="RESTRICT"), index=True
    )
    state: Mapped[str] = mapped_column(String(40))
    binding_hash: Mapped[str] = mapped_column(String(64))
    csrf_token: Mapped[str] = mapped_column(String(64))
    lang: Mapped[str] = mapped_column(String(8))
    email: Mapped[str | None] = mapped_column(String(254))
    #: HMAC of ``<flow id>:<code>`` under the email-code key; never the code
    email_code_hash: Mapped[str | None] = mapped_column(String(64))
    email_code_expires_at: Mapped[datetime | None]
    email_code_attempts: Mapped[int] = mapped_column(default=0)
    email_codes_sent: Mapped[int] = mapped_column(default=0)
    email_code_sent_at: Mapped[datetime | None]
    email_verified_at: Mapped[datetime | None]
    #: Argon2id of the chosen password, moved to the account when activation completes
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
