"""Activation letters: issuing them, and checking a code typed from one.

A code is 16 symbols of a 31-symbol alphabet without look-alikes (0/O, 1/I/L): 79 bits of entropy,
printed as four groups of four (``K7QM-4TZX-…``). Only its HMAC under the activation-code key is
stored. Issuing a letter supersedes the professional's earlier unused letter in the same
transaction; a partial unique index makes two open letters for one professional impossible even
when two helpdesk agents issue at the same instant.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import matricule as matricules
from ..accounts.models import Account, AccountStatus
from ..audit import service as audit
from ..audit.tags import EventTag
from ..clock import Clock, system_clock
from ..directory.models import Professional
from ..errors import InvalidInput, NotFound
from ..security.secrets import CODE_ALPHABET, KeyedHasher, Purpose, random_code, random_token
from .models import ActivationLetter

log = logging.getLogger("authsvc.letters")

CODE_LENGTH = 16
GROUP = 4
VALIDITY = timedelta(days=90)
CODE_BITS = CODE_LENGTH * math.log2(len(CODE_ALPHABET))
assert CODE_BITS >= 60, "SECURITY: an activation code has at least 60 bits of entropy"

_SEPARATORS = str.maketrans("", "", " -_.\t")


def format_code(code: str) -> str:
    """``ABCDEFGHJKMNPQRS`` → ``ABCD-EFGH-JKMN-PQRS``: groups a person can read and type."""
    return "-".join(code[i : i + GROUP] for i in range(0, len(code), GROUP))


def normalize_code(typed: str) -> str:
    """What a person typed → the code as generated: case and separators do not matter."""
    return typed.translate(_SEPARATORS).upper()


@dataclass(frozen=True)
class IssuedLetter:
    letter_id: str
    activation_code: str  # formatted, for the printed letter: shown once, never stored
    expires_at: datetime
    matricule: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return {
            "letter_id": self.letter_id,
            "activation_code": self.activation_code,
            "expires_at": self.expires_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }


def new_subject() -> str:
    """A fresh OpenID Connect ``sub``: 256 random bits, URL-safe, unrelated to the matricule."""
    return random_token(32)


def issue(
    session: Session,
    matricule: str,
    *,
    hasher: KeyedHasher,
    actor: str,
    clock: Clock = system_clock,
    validity: timedelta = VALIDITY,
) -> IssuedLetter:
    """Issue a letter for a listed professional, inside the caller's transaction."""
    try:
        number = matricules.validate(matricule)
    except matricules.InvalidMatricule as exc:
        raise InvalidInput(f"invalid matricule: {exc}") from None
    professional = session.scalars(
        select(Professional).where(Professional.matricule == number).with_for_update()
    ).one_or_none()
    if professional is None:
        raise NotFound(f"no professional with matricule {number} in the directory")
    if not professional.is_listed:
        raise InvalidInput(f"professional {number} has left the directory: no letter can be issued")
    now = clock.now()

    account = session.scalars(
        select(Account).where(Account.professional_id == professional.id)
    ).one_or_none()
    if account is None:
        account = Account(
            professional_id=professional.id,
            subject=new_subject(),
            status=AccountStatus.PENDING,
            created_at=now,
            status_changed_at=now,
        )
        session.add(account)
        session.flush()
        audit.record(
            session,
            EventTag.ACCOUNT_CREATED,
            actor=actor,
            subject=f"professional:{number}",
            data={"account_id": str(account.id)},
            clock=clock,
        )

    superseded = session.scalars(
        update(ActivationLetter)
        .where(ActivationLetter.professional_id == professional.id)
        .where(ActivationLetter.used_at.is_(None))
        .where(ActivationLetter.superseded_at.is_(None))
        .values(superseded_at=now)
        .returning(ActivationLetter.id)
    ).all()
    for letter_id in superseded:
        audit.record(
            session,
            EventTag.LETTER_SUPERSEDED,
            actor=actor,
            subject=f"professional:{number}",
            data={"letter_id": str(letter_id)},
            clock=clock,
        )

    code = random_code(CODE_LENGTH)
    letter = ActivationLetter(
        professional_id=professional.id,
        code_hash=hasher.hash(Purpose.ACTIVATION_CODE, code),
        issued_at=now,
        expires_at=now + validity,
        failed_attempts=0,
        issued_by=actor,
    )
    session.add(letter)
    session.flush()
    log.info(
        "activation letter %s issued for %s, expires %s",
        letter.id,
        hasher.pseudonym(number),
        letter.expires_at,
    )
    audit.record(
        session,
        EventTag.LETTER_ISSUED,
        actor=actor,
        subject=f"professional:{number}",
        data={
            "letter_id": str(letter.id),
            "expires_at": letter.expires_at.isoformat(),
            "account_id": str(account.id),
        },
        clock=clock,
    )
    return IssuedLetter(
        letter_id=str(letter.id),
        activation_code=format_code(code),
        expires_at=letter.expires_at,
        matricule=number,
        name=professional.name,
    )


def code_matches(letter: ActivationLetter, typed: str, hasher: KeyedHasher) -> bool:
    """Constant-time check of a typed code against the letter's stored hash."""
    return hasher.verify(Purpose.ACTIVATION_CODE, normalize_code(typed), letter.code_hash)
