"""The last step binds a card to the account: only the professional's own card, and only while the
directory lists them and the helpdesk has not locked the account (docs/activation.md "The card")."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select, update

from authsvc import matricule
from authsvc.accounts.models import Account, AccountStatus
from authsvc.activation import letters
from authsvc.activation.models import ActivationLetter
from authsvc.audit.models import AuditEvent
from authsvc.cards.models import Card
from authsvc.directory.importer import import_directory

from .conftest import ANNE, HEADER, JEAN, NAMES, Letter


def events(db, tag: str) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    with db.transaction() as s:
        return list(s.scalars(select(AuditEvent.data).where(AuditEvent.tag == tag)))


def account_status(db) -> str:  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        return s.scalars(select(Account.status)).one()


def test_a_card_in_another_name_is_refused(
    activation, letter, make_card, card_for, revocation_server, db
) -> None:  # type: ignore[no-untyped-def]
    """A valid card, but Marie Dupont's, for Anne Muller's letter."""
    a = activation()
    challenge = a.to_smartcard(letter)
    response = a.post("smartcard", auth_token=a.token(make_card(), challenge))  # Marie Dupont
    assert response.status_code == 400
    assert response.json["error"] == "invalid_card"
    assert response.json["reason"] == "holder_mismatch"
    assert response.json["error_description"].endswith("(reason: holder_mismatch)")
    assert account_status(db) == AccountStatus.PENDING
    with db.transaction() as s:
        assert s.scalars(select(Card)).all() == []
        assert s.scalars(select(ActivationLetter.used_at)).one() is None
    (refused,) = events(db, "activation:card:refused")
    assert refused["reason"] == "holder_mismatch"
    # the person can still present their own card (with a fresh challenge)
    fresh = a.get().json["challenge"]
    assert a.post("smartcard", auth_token=a.token(card_for(ANNE), fresh)).status_code == 200
    assert account_status(db) == AccountStatus.ACTIVE


@pytest.mark.parametrize(
    ("directory_names", "card_names"),
    [
        (("Anne", "Muller"), ("ANNE Marie", "MÜLLER")),  # case, accent, a second given name
        (("Jean-Pierre", "D'Amico"), ("Jean Pierre", "D’AMICO")),  # hyphen, apostrophe
        (("Hélène", "Schmit-Weber"), ("helene", "Schmit  Weber")),
        (("Marie", "Kremer"), ("Anne Marie", "Kremer")),  # the directory's is among the card's
    ],
)
def test_the_holder_is_recognised_whatever_the_spelling(
    activation,
    services,
    make_card,
    revocation_server,
    directory_names: tuple[str, str],
    card_names: tuple[str, str],
) -> None:  # type: ignore[no-untyped-def]
    number = matricule.make(date(1965, 8, 9), 77)
    given, family = directory_names
    with services.db.transaction() as s:
        import_directory(
            s,
            f"{HEADER}{number},{given},{family},doctor,1\n".encode(),
            actor="t",
            clock=services.clock,
        )
        issued = letters.issue(s, number, hasher=services.hasher, actor="t", clock=services.clock)
    a = activation()
    challenge = a.to_smartcard(Letter(number, issued.activation_code, issued.letter_id))
    card = make_card(given_name=card_names[0], family_name=card_names[1])
    response = a.post("smartcard", auth_token=a.token(card, challenge))
    assert response.status_code == 200, response.json


def _leave(services, *, stay: str = JEAN) -> None:  # type: ignore[no-untyped-def]
    """A full directory import without Anne: she left (her account is suspended)."""
    given, family = NAMES[stay]
    with services.db.transaction() as s:
        import_directory(
            s,
            f"{HEADER}{stay},{given},{family},nurse,1\n".encode(),
            full=True,
            force=True,
            actor="t",
            clock=services.clock,
        )


def test_a_professional_who_left_during_the_activation_is_not_activated(
    activation, letter, card_for, revocation_server, services, db
) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    challenge = a.to_smartcard(letter)
    _leave(services)
    assert account_status(db) == AccountStatus.SUSPENDED
    response = a.post("smartcard", auth_token=a.token(card_for(ANNE), challenge))
    assert response.status_code == 409
    assert response.json["error"] == "invalid_activation"
    assert response.json["reason"] == "professional_left"
    assert account_status(db) == AccountStatus.SUSPENDED  # not overridden
    with db.transaction() as s:
        assert s.scalars(select(Card)).all() == []
    (refused,) = events(db, "activation:flow:refused")
    assert refused["reason"] == "professional_left"


def test_an_account_locked_by_the_helpdesk_meanwhile_stays_locked(
    activation, letter, card_for, revocation_server, services, db
) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    challenge = a.to_smartcard(letter)
    with db.transaction() as s:
        s.execute(update(Account).values(status=AccountStatus.LOCKED))
    response = a.post("smartcard", auth_token=a.token(card_for(ANNE), challenge))
    assert response.status_code == 409
    assert response.json["reason"] == "account_locked"
    assert account_status(db) == AccountStatus.LOCKED
    with db.transaction() as s:
        assert s.scalars(select(ActivationLetter.used_at)).one() is None


def test_a_professional_listed_again_during_the_activation_comes_back(
    activation, letter, card_for, revocation_server, services, db
) -> None:  # type: ignore[no-untyped-def]
    """Left (suspended), then listed again before the card step: the activation lifts the
    suspension, as a returning professional's does."""
    a = activation()
    challenge = a.to_smartcard(letter)
    _leave(services)
    with services.db.transaction() as s:
        import_directory(
            s, f"{HEADER}{ANNE},Anne,Muller,doctor,1\n".encode(), actor="t", clock=services.clock
        )
    assert account_status(db) == AccountStatus.SUSPENDED
    response = a.post("smartcard", auth_token=a.token(card_for(ANNE), challenge))
    assert response.status_code == 200, response.json
    assert account_status(db) == AccountStatus.ACTIVE
