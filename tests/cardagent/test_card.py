"""authsvc.cardagent.card: the cards through PKCS#11, on real SoftHSM2 tokens, in-process."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass, TokenFlag

from authsvc.cardagent.card import (
    CardReader,
    ModuleError,
    NoCard,
    WrongPin,
    card_id,
    pin_state,
    signed_data,
)
from authsvc.config import default_pkcs11_module
from softhsm.testca import Card, SoftHSM, TestCA

from .conftest import new_nonce
from .webeid import verify_token

ORIGIN = "https://auth.esante.example"


@pytest.fixture
def reader(cards: SoftHSM) -> CardReader:
    return CardReader(default_pkcs11_module())


def test_cards_lists_authentication_certificates(
    reader: CardReader, issue: Callable[..., Card]
) -> None:
    assert reader.cards() == []
    ec_card = issue(given_name="Marie", family_name="Dupont")
    rsa_card = issue(given_name="Luc", family_name="Hoffmann", key_type="rsa")
    found = {info.label: info for info in reader.cards()}
    assert set(found) == {ec_card.label, rsa_card.label}
    marie = found[ec_card.label]
    assert marie.holder == "Marie Dupont"
    assert marie.certificate == ec_card.certificate
    assert marie.algorithm == "ES256"
    assert marie.card_id == card_id(ec_card.certificate)
    assert marie.key_id == b"\x01"
    assert marie.pin_state == "ok"
    assert marie.pin_pad is False
    assert marie.to_status() == {
        "id": marie.card_id,
        "label": ec_card.label,
        "holder": "Marie Dupont",
    }
    assert found[rsa_card.label].algorithm == "RS256"


def test_authenticate_signs_origin_and_nonce(
    reader: CardReader, issue: Callable[..., Card]
) -> None:
    card = issue()
    (info,) = reader.cards()
    nonce = new_nonce()
    token = reader.authenticate(info.card_id, card.user_pin, origin=ORIGIN, nonce=nonce)
    assert verify_token(token, ORIGIN, nonce) == card.certificate


def test_authenticate_errors(
    reader: CardReader, issue: Callable[..., Card], cards: SoftHSM
) -> None:
    card = issue()
    (info,) = reader.cards()
    with pytest.raises(WrongPin) as wrong:
        reader.authenticate(info.card_id, "000000", origin=ORIGIN, nonce=new_nonce())
    assert wrong.value.code == "wrong_pin"
    assert wrong.value.count_low  # SoftHSM2 sets USER_PIN_COUNT_LOW, and nothing more
    assert not wrong.value.final_try
    (after,) = reader.cards()
    assert after.pin_state == "count_low"
    with pytest.raises(WrongPin):
        reader.authenticate(info.card_id, "", origin=ORIGIN, nonce=new_nonce())
    with pytest.raises(WrongPin):
        reader.authenticate(info.card_id, "1" * 65, origin=ORIGIN, nonce=new_nonce())
    with pytest.raises(NoCard) as gone:
        reader.authenticate("0" * 32, card.user_pin, origin=ORIGIN, nonce=new_nonce())
    assert gone.value.code == "no_card"
    # the right PIN clears the flag
    reader.authenticate(info.card_id, card.user_pin, origin=ORIGIN, nonce=new_nonce())
    assert reader.cards()[0].pin_state == "ok"
    cards.delete_token(card.label)
    with pytest.raises(NoCard):
        reader.authenticate(info.card_id, card.user_pin, origin=ORIGIN, nonce=new_nonce())


def test_pin_states_from_token_flags() -> None:
    assert pin_state(0) == "ok"
    assert pin_state(TokenFlag.USER_PIN_COUNT_LOW) == "count_low"
    assert pin_state(TokenFlag.USER_PIN_COUNT_LOW | TokenFlag.USER_PIN_FINAL_TRY) == "final_try"
    assert pin_state(TokenFlag.USER_PIN_LOCKED | TokenFlag.USER_PIN_COUNT_LOW) == "locked"


def test_signed_data_is_hash_of_origin_then_hash_of_nonce() -> None:
    nonce = new_nonce()
    assert signed_data(ORIGIN, nonce, "ES256") == (
        hashlib.sha256(ORIGIN.encode()).digest() + hashlib.sha256(nonce.encode()).digest()
    )
    assert signed_data(ORIGIN, nonce, "ES512") == (
        hashlib.sha512(ORIGIN.encode()).digest() + hashlib.sha512(nonce.encode()).digest()
    )


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_the_private_key_cannot_be_exported_from_the_token(
    reader: CardReader, issue: Callable[..., Card], cards: SoftHSM, key_type: str
) -> None:
    card = issue(key_type=key_type)
    (info,) = reader.cards()
    reader.authenticate(info.card_id, card.user_pin, origin=ORIGIN, nonce=new_nonce())
    with cards.session(card.label, user_pin=card.user_pin) as session:
        (key,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: info.key_id}
        )
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.SENSITIVE] is True
        secret = Attribute.PRIVATE_EXPONENT if key_type == "rsa" else Attribute.VALUE
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[secret]


def test_uninitialised_slots_and_other_tokens_are_skipped(
    reader: CardReader, cards: SoftHSM, issue: Callable[..., Card], test_ca: TestCA
) -> None:
    cards.init_token("blank", so_pin="12345678", user_pin="1234")  # a token without certificate
    card = issue()
    assert [info.label for info in reader.cards()] == [card.label]


def test_a_module_that_is_not_pkcs11(tmp_path: pytest.TempPathFactory) -> None:
    fake = tmp_path / "not-a-module.so"  # type: ignore[operator]
    fake.write_text("not an ELF file")
    with pytest.raises(ModuleError) as failed:
        CardReader(str(fake))
    assert "cannot load the PKCS#11 module" in failed.value.description
