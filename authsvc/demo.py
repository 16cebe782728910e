"""The demo that ``make run`` sets up, so that a newcomer can try authsvc in a minute.

Development only: it imports a small directory (three professionals) and issues an activation
letter for the demo professional unless their account is already active. It is idempotent: run it
again and it tells you where you are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select

from . import matricule
from .accounts.models import Account
from .activation import letters
from .activation.letters import IssuedLetter
from .app import Services
from .directory.importer import HEADER, import_directory
from .directory.models import Professional

DEMO_ACTOR = "demo"
DEMO_MATRICULE = matricule.make(date(1980, 4, 12), 17)
PROFESSIONALS = [
    (DEMO_MATRICULE, "Marie", "Dupont", "doctor", "212345-67"),
    (matricule.make(date(1975, 9, 30), 3), "Jean", "Weber", "nurse", "312345-11"),
    (matricule.make(date(1990, 1, 22), 841), "Sophie", "Muller", "pharmacist", "412345-29"),
]


@dataclass(frozen=True)
class DemoState:
    matricule: str
    name: str
    account_status: str | None
    letter: IssuedLetter | None


def directory_csv() -> bytes:
    lines = [",".join(HEADER)] + [",".join(row) for row in PROFESSIONALS]
    return ("\n".join(lines) + "\n").encode("utf-8")


def init(services: Services) -> DemoState:
    with services.db.transaction() as session:
        import_directory(
            session,
            directory_csv(),
            actor=DEMO_ACTOR,
            source="demo",
            clock=services.clock,
        )
    with services.db.transaction() as session:
        professional = session.scalars(
            select(Professional).where(Professional.matricule == DEMO_MATRICULE)
        ).one()
        account = session.scalars(
            select(Account).where(Account.professional_id == professional.id)
        ).one_or_none()
        status = account.status if account else None
        letter = None
        if account is None or not account.is_active:
            letter = letters.issue(
                session,
                DEMO_MATRICULE,
                hasher=services.hasher,
                actor=DEMO_ACTOR,
                clock=services.clock,
            )
            status = "pending"
        return DemoState(DEMO_MATRICULE, professional.name, status, letter)
