"""Looking accounts up (the web layer and the provider need little more)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from ..directory.models import Professional
from .models import Account, AccountStatus


class Accounts:
    def matricule_of(self, db: Session, account_id: uuid.UUID) -> str | None:
        account = db.get(Account, account_id)
        if account is None:
            return None
        professional = db.get(Professional, account.professional_id)
        return professional.matricule if professional else None

    def with_professional(
        self, db: Session, account_id: uuid.UUID
    ) -> tuple[Account, Professional] | None:
        """The account and its directory entry, if the account is active."""
        account = db.get(Account, account_id)
        if account is None or account.status != AccountStatus.ACTIVE:
            return None
        return account, db.get_one(Professional, account.professional_id)
