"""Staff roles: who may act as the agency's helpdesk or administrator."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base


class Role(StrEnum):
    HELPDESK = "helpdesk"
    ADMIN = "admin"


class StaffRole(Base):
    __tablename__ = "staff_roles"
    __table_args__ = (CheckConstraint("role IN ('helpdesk', 'admin')", name="role"),)

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    granted_at: Mapped[datetime]
    granted_by: Mapped[str] = mapped_column(String(200))
