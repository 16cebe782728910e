"""Passwords: the policy a new password must meet, and Argon2id hashing.

SECURITY "Secrets at rest": Argon2id (argon2-cffi) with at least OWASP's parameters
(m = 19 MiB, t = 2, p = 1), rehashed at sign-in when the parameters are raised; never logged.

The policy (activation and password change): at least 12 characters, not containing the matricule
or the person's names, and not rated weak by zxcvbn (a well-kept strength estimator that knows
common passwords, keyboard patterns, dates and the person's own data passed as ``user_inputs``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 1024
#: zxcvbn's score goes from 0 (too guessable) to 4 (very unguessable); 3 is "safely unguessable".
MIN_ZXCVBN_SCORE = 3
#: zxcvbn's cost grows with the length; beyond this the prefix decides (a long password is strong).
ZXCVBN_MAX_INPUT = 100


@dataclass(frozen=True)
class Argon2Parameters:
    time_cost: int = 2
    memory_cost: int = 19 * 1024  # KiB
    parallelism: int = 1


OWASP = Argon2Parameters()
#: For tests only: fast, and still a real Argon2id.
CHEAP = Argon2Parameters(time_cost=1, memory_cost=1024, parallelism=1)


class PasswordHasher:
    """Argon2id hashing with one set of parameters, and a dummy hash for constant-time refusals."""

    def __init__(self, parameters: Argon2Parameters = OWASP) -> None:
        self.parameters = parameters
        self._argon2 = _Argon2(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_cost,
            parallelism=parameters.parallelism,
            type=Type.ID,
        )
        self._dummy = self._argon2.hash("not a password: used to spend the same time")

    def hash(self, password: str) -> str:
        return self._argon2.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Check a password; with no stored hash, spend the same time on a dummy and refuse."""
        try:
            return self._argon2.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._argon2.check_needs_rehash(stored)


class WeakPassword(ValueError):
    """The password does not meet the policy.

    :param reason: ``too_short``, ``too_long``, ``contains_matricule``, ``contains_name`` or
        ``too_guessable`` (pages translate it);
    :param message: the same in English, for a person.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _fold(text: str) -> str:
    """Lower case without accents, for "does it contain the name" checks."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def check_policy(
    password: str,
    *,
    matricule: str,
    names: Iterable[str] = (),
    other_inputs: Iterable[str] = (),
) -> None:
    """Raise :class:`WeakPassword` if ``password`` does not meet the policy."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword("too_short", f"The password must have at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        raise WeakPassword("too_long", f"The password must have at most {MAX_LENGTH} characters.")
    folded = _fold(password)
    digits = "".join(ch for ch in password if ch.isdigit())
    if matricule and (matricule in digits or matricule in password):
        raise WeakPassword("contains_matricule", "The password must not contain your matricule.")
    for name in names:
        for part in _fold(name).replace("-", " ").split():
            if len(part) >= 3 and part in folded:
                raise WeakPassword("contains_name", "The password must not contain your name.")
    from zxcvbn import zxcvbn

    inputs = [matricule, *names, *other_inputs]
    result = zxcvbn(password[:ZXCVBN_MAX_INPUT], user_inputs=[i for i in inputs if i])
    if result["score"] < MIN_ZXCVBN_SCORE:
        hint = (result.get("feedback") or {}).get("warning") or ""
        message = "This password is too easy to guess."
        if hint:
            message += f" {hint.rstrip('.')}."
        raise WeakPassword("too_guessable", message + " Use a longer phrase of unrelated words.")
