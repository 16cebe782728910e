"""A directory entry: one health professional referenced in the national directory (HPD)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base


class DirectoryStatus(StrEnum):
    LISTED = "listed"  # present in the latest directory file
    LEFT = "left"  # absent from a full import: the professional ended their activity


class Professional(Base):
    __tablename__ = "professionals"
    __table_args__ = (CheckConstraint("status IN ('listed', 'left')", name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    matricule: Mapped[str] = mapped_column(String(13), unique=True)
    given_name: Mapped[str] = mapped_column(String(200))
    family_name: Mapped[str] = mapped_column(String(200))
    profession: Mapped[str] = mapped_column(String(100))
    provider_code: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=DirectoryStatus.LISTED)
    left_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.family_name}"

    @property
    def is_listed(self) -> bool:
        return self.status == DirectoryStatus.LISTED
