"""Is the card's holder the professional the letter was sent to? (docs/activation.md "The card")

A card certificate names its holder in its subject: givenName and surname, and a commonName
("Given Family"). The directory names the professional: ``given_name`` and ``family_name``. Both
are compared after :func:`normalize`:

- Unicode NFKD, then the combining marks (accents) dropped: ``Hélène`` → ``helene``;
- case-folded: ``DUPONT`` → ``dupont``, ``Strauß`` → ``strauss``;
- hyphens, apostrophes and runs of spaces are one separator: ``Jean-Pierre``, ``Jean Pierre`` and
  ``Jean  Pierre`` are alike, as are ``D'Amico`` and ``D Amico``.

The family names must then be equal. A person may have several given names, and a card may carry
all of them while the directory holds one: the directory's given name must be equal to the card's,
or be found among them (a run of whole words: ``Anne`` and ``Anne Marie`` are among ``Anne Marie
Louise``; ``Ann`` is not). When the subject lacks givenName or surname, the commonName is used:
``Given… Family`` or ``Family Given…``.

Transliterations are not guessed: ``Müller`` matches ``Muller`` (the accent is dropped), not
``Mueller``. Such a professional's directory entry must spell the name as the card does.
"""

from __future__ import annotations

import re
import unicodedata

#: hyphens and dashes, apostrophes and quotes, and any white space: one separator
_SEPARATORS = re.compile(
    r"[\s\-\u00ad\u2010-\u2015\u2212\ufe63\uff0d'`\u00b4\u02b9\u02bb\u02bc\u02bd\u2018\u2019\u201b\u2032]+"
)


def normalize(name: str) -> str:
    """A name as it is compared: no accents, case-folded, one space between its words."""
    decomposed = unicodedata.normalize("NFKD", name)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(_SEPARATORS.sub(" ", bare.casefold()).split())


def words(name: str | None) -> list[str]:
    return normalize(name).split() if name else []


def _among(part: list[str], whole: list[str]) -> bool:
    """``part`` is a run of consecutive words of ``whole`` (or all of it)."""
    n = len(part)
    return n > 0 and any(whole[i : i + n] == part for i in range(len(whole) - n + 1))


def holder_matches(
    *,
    card_given_name: str | None,
    card_surname: str | None,
    card_common_name: str | None,
    given_name: str,
    family_name: str,
) -> bool:
    """Whether a card's holder names are the directory's ``given_name`` + ``family_name``."""
    given, family = words(given_name), words(family_name)
    if not given or not family:
        return False
    card_given, card_family = words(card_given_name), words(card_surname)
    if card_given and card_family:
        return card_family == family and _among(given, card_given)
    common = words(card_common_name)
    n = len(family)
    if len(common) <= n:
        return False
    # "Given… Family" (how cards write it), or "Family Given…"
    if common[-n:] == family and _among(given, common[:-n]):
        return True
    return common[:n] == family and _among(given, common[n:])
