"""The Luxembourg national identification number ("matricule"), 13 digits.

Layout::

    YYYY MM DD  NNN  L  V
    └─ birth ─┘ └┬┘  │  └ Verhoeff check digit over the first 11 digits
                 │   └ Luhn check digit over the first 11 digits
                 └ sequence number

The date must be a real calendar date. The check digits are computed with python-stdnum's
Luhn and Verhoeff implementations, over the same first 11 digits (not chained).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from stdnum import luhn, verhoeff

LENGTH = 13
#: birth dates before this year are refused: no one alive was born then
EARLIEST_YEAR = 1850


class InvalidMatricule(ValueError):
    """The value is not a valid matricule; the message says why, for a person."""


def compact(value: str) -> str:
    """Remove the spaces a person may type (``1893 1201 057 32``)."""
    return "".join(value.split())


def check_digits(first11: str) -> str:
    """The two check digits (Luhn, then Verhoeff) for the first 11 digits."""
    return luhn.calc_check_digit(first11) + verhoeff.calc_check_digit(first11)


def validate(value: str) -> str:
    """Return the compact matricule, or raise :class:`InvalidMatricule` saying what is wrong."""
    if not isinstance(value, str):
        raise InvalidMatricule("a matricule is a string of 13 digits")
    number = compact(value)
    if len(number) != LENGTH or not number.isascii() or not number.isdigit():
        raise InvalidMatricule("a matricule has exactly 13 digits")
    try:
        born = date(int(number[0:4]), int(number[4:6]), int(number[6:8]))
    except ValueError:
        raise InvalidMatricule("the first 8 digits of a matricule are a date (YYYYMMDD)") from None
    if born.year < EARLIEST_YEAR or born > datetime.now(UTC).date() + timedelta(days=1):
        raise InvalidMatricule("the first 8 digits of a matricule are a birth date in the past")
    if luhn.calc_check_digit(number[:11]) != number[11]:
        raise InvalidMatricule("the 12th digit (Luhn check) is wrong")
    if verhoeff.calc_check_digit(number[:11]) != number[12]:
        raise InvalidMatricule("the 13th digit (Verhoeff check) is wrong")
    return number


def is_valid(value: str) -> bool:
    try:
        validate(value)
    except InvalidMatricule:
        return False
    return True


def birth_date(value: str) -> date:
    number = validate(value)
    return date(int(number[0:4]), int(number[4:6]), int(number[6:8]))


def make(birth: date, sequence: int) -> str:
    """Build a valid matricule (demo data, tests, benchmarks)."""
    if not 0 <= sequence <= 999:
        raise ValueError("the sequence number has 3 digits")
    first11 = f"{birth:%Y%m%d}{sequence:03d}"
    return first11 + check_digits(first11)
