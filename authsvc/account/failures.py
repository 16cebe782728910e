"""A wrong current password on the account pages counts as a failed password attempt.

The count (``accounts.failed_logins``, the lock after ``LOCK_AFTER``, the ``login:attempt:failed``
and ``account:account:locked`` events) is kept by the sign-in service; this is the one public door
to it from outside that package, so that there is one back-off and one lock, not two.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..accounts.models import Account
from ..login.service import Login


def count_wrong_password(
    login: Login, db: Session, *, matricule: str, account: Account, ip: str | None
) -> None:
    """Count a wrong password for ``account``, inside the caller's transaction (the account row
    locked by the caller). The per-matricule back-off is the caller's to hit after the commit, as
    the sign-in does."""
    # Login._failed is private to the sign-in service (owned by another team): this wrapper is
    # the single place that reaches it, until it gets a public name there.
    login._failed(db, matricule, account, ip, reason="wrong password")
