"""The card holder's names against the directory's (authsvc.activation.holder)."""

from __future__ import annotations

import pytest

from authsvc.activation.holder import holder_matches, normalize


@pytest.mark.parametrize(
    ("typed", "normalized"),
    [
        ("Hélène", "helene"),
        ("  MÜLLER ", "muller"),
        ("Strauß", "strauss"),
        ("Jean-Pierre", "jean pierre"),
        ("Jean\u2010Pierre", "jean pierre"),  # a Unicode hyphen
        ("Jean  Pierre", "jean pierre"),
        ("D'Amico", "d amico"),
        ("D\u2019Amico", "d amico"),  # a typographic apostrophe
        ("Ｍａｒｉｅ", "marie"),  # fullwidth: NFKD makes it plain
        ("Łukasz", "łukasz"),  # no decomposition: kept as is
    ],
)
def test_normalize(typed: str, normalized: str) -> None:
    assert normalize(typed) == normalized


def match(
    card_given: str | None, card_surname: str | None, cn: str | None, given: str, family: str
) -> bool:
    return holder_matches(
        card_given_name=card_given,
        card_surname=card_surname,
        card_common_name=cn,
        given_name=given,
        family_name=family,
    )


@pytest.mark.parametrize(
    ("card_given", "card_surname", "given", "family"),
    [
        ("Anne", "Muller", "Anne", "Muller"),
        ("ANNE", "MÜLLER", "Anne", "Muller"),  # case, accent
        ("Anne", "Muller", "anne", "müller"),
        ("Anne Marie Louise", "Muller", "Anne", "Muller"),  # several given names on the card
        ("Anne Marie Louise", "Muller", "Marie", "Muller"),
        ("Anne Marie Louise", "Muller", "Anne Marie", "Muller"),
        ("Anne-Marie", "Muller", "Anne Marie", "Muller"),  # hyphen = space
        ("Anne Marie", "Muller", "Anne-Marie", "Muller"),
        ("Jean", "D'Amico-Weber", "Jean", "D’Amico Weber"),
        ("Jean", "De  la   Fontaine", "Jean", "de la Fontaine"),
        ("Hélène", "Schmit", "Helene", "Schmit"),
    ],
)
def test_names_that_match(card_given: str, card_surname: str, given: str, family: str) -> None:
    assert match(card_given, card_surname, None, given, family)


@pytest.mark.parametrize(
    ("card_given", "card_surname", "given", "family"),
    [
        ("Marie", "Dupont", "Anne", "Muller"),  # someone else
        ("Anne", "Dupont", "Anne", "Muller"),  # same given name, other family
        ("Marie", "Muller", "Anne", "Muller"),  # same family, other given name
        ("Anne", "Muller", "Anne Marie", "Muller"),  # the directory's given name is not all there
        ("Annette", "Muller", "Anne", "Muller"),  # whole words only
        ("Anne", "Muller-Weber", "Anne", "Muller"),  # the family name must be equal
        ("Anne", "Mueller", "Anne", "Muller"),  # transliterations are not guessed
        ("Marie Anne", "Muller", "Anne Marie", "Muller"),  # given names in their order
    ],
)
def test_names_that_do_not_match(
    card_given: str, card_surname: str, given: str, family: str
) -> None:
    assert not match(card_given, card_surname, None, given, family)


def test_common_name_when_the_subject_lacks_given_name_or_surname() -> None:
    assert match(None, None, "Anne Marie MÜLLER", "Anne", "Muller")
    assert match(None, "Muller", "Anne Muller", "Anne", "Muller")  # givenName missing
    assert match(None, None, "Muller Anne", "Anne", "Muller")  # family name first
    assert not match(None, None, "Marie Dupont", "Anne", "Muller")
    assert not match(None, None, "Muller", "Anne", "Muller")  # no given name at all
    assert not match(None, None, None, "Anne", "Muller")
    # givenName and surname, when both present, are what counts (not a CN that happens to fit)
    assert not match("Marie", "Dupont", "Anne Muller", "Anne", "Muller")


def test_empty_directory_names_never_match() -> None:
    assert not match("Anne", "Muller", "Anne Muller", "", "Muller")
    assert not match("Anne", "Muller", "Anne Muller", "Anne", " - ")
