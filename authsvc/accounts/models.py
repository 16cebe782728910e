"""An account belongs to exactly one directory entry and moves through a small set of statuses.

``pending``: a letter was issued, the account was never activated. ``active``: it can sign in.
``locked``: the helpdesk or the brute-force protection locked it. ``suspended``: the professional
left the directory.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..db import Base
from ..directory.models import Professional


class AccountStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    LOCKED = "locked"
    SUSPENDED = "suspended"


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'active', 'locked', 'suspended')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    professional_id: Mapped[int] = mapped_column(
        ForeignKey("professionals.id", ondelete="RESTRICT"), unique=True
    )
    #: The OpenID Connect ``sub``: opaque, random, stable; never the matricule.
    subject: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=AccountStatus.PENDING)
    email: Mapped[str | None] = mapped_column(String(254))
    email_verified_at: Mapped[datetime | None]
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]
    status_changed_at: Mapped[datetime]
    #: consecutive wrong passwords (reset by a successful sign-in); the account locks at a threshold
    failed_logins: Mapped[int] = mapped_column(default=0)
    last_failed_login_at: Mapped[datetime | None]

    professional: Mapped[Professional] = relationship()

    @property
    def is_active(self) -> bool:
        return self.status == AccountStatus.ACTIVE
