"""The matricule: YYYYMMDD + 3 digits + Luhn + Verhoeff, both over the first 11 digits."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authsvc import matricule

# Numbers checked by hand against the published algorithms (Luhn mod 10, Verhoeff dihedral D5).
VALID = [
    "1893120105732",  # 1893-12-01, sequence 057: Luhn 3, Verhoeff 2
    "1980010112302",
    "2000022900197",  # a leap day
    "1975123100082",
]


@pytest.mark.parametrize("number", VALID)
def test_known_valid_numbers(number: str) -> None:
    assert matricule.validate(number) == number
    assert matricule.is_valid(number)


def test_spaces_typed_by_a_person_are_ignored() -> None:
    assert matricule.validate(" 1893 1201 057 32 ") == "1893120105732"


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("1893120105733", "Verhoeff"),  # last digit wrong
        ("1893120105722", "Luhn"),  # 12th digit wrong
        ("1893120105723", "Luhn"),  # check digits swapped
        ("1893120150732", "Luhn"),  # sequence digits transposed
        ("1893130105732", "date"),  # month 13
        ("1900022900000", "date"),  # 1900 is not a leap year
        ("2023023100000", "date"),  # 31 February
        ("2999010100000", "in the past"),  # not born yet
        ("0001010100000", "in the past"),  # year 1
        ("189312010573", "13 digits"),
        ("18931201057321", "13 digits"),
        ("18931201O5732", "13 digits"),  # a letter O
        ("١٨٩٣١٢٠١٠٥٧٣٢", "13 digits"),  # Arabic-Indic digits are digits, not ASCII
        ("", "13 digits"),
    ],
)
def test_known_invalid_numbers(number: str, reason: str) -> None:
    with pytest.raises(matricule.InvalidMatricule, match=reason):
        matricule.validate(number)
    assert not matricule.is_valid(number)


def test_check_digits_are_both_over_the_first_eleven_digits() -> None:
    # Luhn over 18931201057 is 3; Verhoeff over the same 11 digits (not over 12) is 2.
    assert matricule.check_digits("18931201057") == "32"


def test_not_a_string() -> None:
    with pytest.raises(matricule.InvalidMatricule):
        matricule.validate(1893120105732)  # type: ignore[arg-type]


dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31))


@given(birth=dates, seq=st.integers(0, 999))
def test_made_numbers_are_valid_and_keep_their_birth_date(birth: date, seq: int) -> None:
    number = matricule.make(birth, seq)
    assert matricule.validate(number) == number
    assert matricule.birth_date(number) == birth


@given(
    birth=dates,
    seq=st.integers(0, 999),
    position=st.integers(0, 12),
    delta=st.integers(1, 9),
)
def test_every_single_digit_error_is_detected(
    birth: date, seq: int, position: int, delta: int
) -> None:
    number = matricule.make(birth, seq)
    wrong = number[:position] + str((int(number[position]) + delta) % 10) + number[position + 1 :]
    assert not matricule.is_valid(wrong)


@given(birth=dates, seq=st.integers(0, 999), position=st.integers(8, 11))
def test_adjacent_transpositions_in_the_sequence_and_check_digits_are_detected(
    birth: date, seq: int, position: int
) -> None:
    number = matricule.make(birth, seq)
    if number[position] == number[position + 1]:
        return
    swapped = number[:position] + number[position + 1] + number[position] + number[position + 2 :]
    assert not matricule.is_valid(swapped)
