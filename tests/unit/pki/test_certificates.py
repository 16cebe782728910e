"""Card certificate validation: anchors, validity, self-signed, key usage, EKU, key, chain."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from authsvc.clock import FrozenClock
from authsvc.errors import ConfigError
from authsvc.pki.certificates import CardCertificateValidator, load_trust_anchors
from authsvc.pki.errors import CardRefused
from authsvc.pki.revocation import NoRevocationCheck

from .authority import AUTH_USAGE, CardAuthority, key_usage


@pytest.fixture
def validator(authority: CardAuthority, pki_clock: FrozenClock) -> CardCertificateValidator:
    return CardCertificateValidator(authority.anchors, NoRevocationCheck(), pki_clock)


def refused(
    validator: CardCertificateValidator, cert: bytes | x509.Certificate, reason: str
) -> CardRefused:
    with pytest.raises(CardRefused) as info:
        validator.validate(cert)
    assert info.value.reason == reason, (info.value.reason, info.value.detail)
    return info.value


# --- trust anchors -------------------------------------------------------------------------------


def test_anchors_load_from_a_pem_file(authority: CardAuthority, tmp_path: Path) -> None:
    path = tmp_path / "anchors.pem"
    path.write_bytes(b"# the card CAs\n" + authority.anchors_pem())
    assert load_trust_anchors(path) == authority.anchors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"garbage, not PEM", "no readable PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "no readable PEM"),
    ],
)
def test_a_missing_empty_or_garbage_anchors_file_names_the_variable(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "anchors.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_trust_anchors(path)
    assert str(info.value).startswith("AUTHSVC_CARD_TRUST_ANCHORS: ")
    assert message in str(info.value)


def test_an_end_entity_certificate_is_not_an_anchor(
    authority: CardAuthority, tmp_path: Path
) -> None:
    card = authority.issue("p256")
    path = tmp_path / "anchors.pem"
    path.write_bytes(authority.anchors_pem() + card.certificate.public_bytes(Encoding.PEM))
    with pytest.raises(
        ConfigError, match=r"AUTHSVC_CARD_TRUST_ANCHORS: .*certificate 3 .*not a CA"
    ):
        load_trust_anchors(path)


def test_an_anchors_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_CARD_TRUST_ANCHORS"):
        load_trust_anchors(tmp_path)


# --- a good card ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["p256", "p384", "p521", "rsa2048"])
def test_a_good_card_is_validated(
    validator: CardCertificateValidator, authority: CardAuthority, key: str
) -> None:
    card = authority.issue(key, serial=0x0A1B2C3D4E5F)
    result = validator.validate(card.der)
    assert result.certificate == card.certificate
    assert result.chain == (card.certificate, authority.issuing)
    assert result.issuer_certificate == authority.issuing
    assert result.issuer == "CN=Test Issuing CA,O=authsvc tests,C=LU"
    assert result.serial == "a1b2c3d4e5f"
    assert result.common_name == "Anne Muller"
    assert (result.given_name, result.surname) == ("Anne", "Muller")
    assert result.serial_number == "1970051700012"
    assert result.subject.startswith("CN=Anne Muller")
    assert result.fingerprint == hashlib.sha256(card.der).hexdigest()
    assert result.not_valid_after == card.certificate.not_valid_after_utc


def test_a_parsed_certificate_is_accepted_too(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    card = authority.issue("p256")
    assert validator.validate(card.certificate).certificate == card.certificate


def test_a_card_without_subject_serial_number(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    assert validator.validate(authority.issue("p256", serial_number=None).der).serial_number is None


def test_only_the_issuing_ca_as_anchor_is_enough(
    authority: CardAuthority, pki_clock: FrozenClock
) -> None:
    validator = CardCertificateValidator([authority.issuing], NoRevocationCheck(), pki_clock)
    validator.validate(authority.issue("p256").der)


def test_only_the_root_as_anchor_is_not_enough(
    authority: CardAuthority, pki_clock: FrozenClock
) -> None:
    """A card presents only its own certificate: its issuing CA must be among the anchors."""
    validator = CardCertificateValidator([authority.root], NoRevocationCheck(), pki_clock)
    refused(validator, authority.issue("p256").der, "untrusted_issuer")


# --- EKU and key usage (INTERFACE §4) ------------------------------------------------------------


def test_no_eku_at_all_is_accepted_as_luxembourg_cards_carry_none(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    card = authority.issue("p256", eku=None)
    with pytest.raises(x509.ExtensionNotFound):
        card.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    validator.validate(card.der)


@pytest.mark.parametrize(
    "eku",
    [
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        [ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CLIENT_AUTH],
    ],
)
def test_an_eku_with_client_auth_is_accepted(
    validator: CardCertificateValidator, authority: CardAuthority, eku: list[x509.ObjectIdentifier]
) -> None:
    validator.validate(authority.issue("p256", eku=eku).der)


@pytest.mark.parametrize(
    "eku",
    [
        [ExtendedKeyUsageOID.SERVER_AUTH],
        [ExtendedKeyUsageOID.EMAIL_PROTECTION],
        [ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.OCSP_SIGNING],
        [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE],
    ],
)
def test_an_eku_without_client_auth_is_refused(
    validator: CardCertificateValidator, authority: CardAuthority, eku: list[x509.ObjectIdentifier]
) -> None:
    refused(validator, authority.issue("p256", eku=eku).der, "wrong_extended_key_usage")


@pytest.mark.parametrize(
    "usage",
    [
        None,
        key_usage(content_commitment=True),  # a signing (non-repudiation) certificate
        key_usage(key_encipherment=True),
        key_usage(key_agreement=True),
    ],
)
def test_a_key_usage_without_digital_signature_is_refused(
    validator: CardCertificateValidator, authority: CardAuthority, usage: x509.KeyUsage | None
) -> None:
    refused(validator, authority.issue("p256", usage=usage).der, "wrong_key_usage")


def test_digital_signature_among_other_usages_is_accepted(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    usage = key_usage(digital_signature=True, key_encipherment=True)
    validator.validate(authority.issue("rsa2048", usage=usage).der)


# --- validity, at the injected clock -------------------------------------------------------------


def test_validity_period_bounds_are_inclusive(authority: CardAuthority, now: dt.datetime) -> None:
    card = authority.issue("p256", not_before=now, not_after=now + dt.timedelta(days=1))
    for at in (now, now + dt.timedelta(days=1)):
        CardCertificateValidator(authority.anchors, NoRevocationCheck(), FrozenClock(at)).validate(
            card.der
        )


def test_an_expired_card_is_refused_as_expired(authority: CardAuthority, now: dt.datetime) -> None:
    card = authority.issue("p256", not_before=now - dt.timedelta(days=10), not_after=now)
    later = FrozenClock(now + dt.timedelta(seconds=1))
    refused(
        CardCertificateValidator(authority.anchors, NoRevocationCheck(), later), card.der, "expired"
    )


def test_a_card_not_yet_valid_is_refused_as_not_yet_valid(
    authority: CardAuthority, now: dt.datetime
) -> None:
    card = authority.issue("p256", not_before=now + dt.timedelta(seconds=1))
    validator = CardCertificateValidator(authority.anchors, NoRevocationCheck(), FrozenClock(now))
    refused(validator, card.der, "not_yet_valid")


def test_an_expired_issuing_ca_makes_the_card_untrusted(
    now: dt.datetime, pki_clock: FrozenClock
) -> None:
    authority = CardAuthority(now, label="Old", key_index=5)
    authority.issuing = authority.ca_certificate(
        "Old Issuing CA",
        authority.issuing_key,
        start=now - dt.timedelta(days=400),
        end=now - dt.timedelta(days=1),
    )
    card = authority.issue("p256")
    validator = CardCertificateValidator(authority.anchors, NoRevocationCheck(), pki_clock)
    refused(validator, card.der, "untrusted_issuer")


# --- trust ---------------------------------------------------------------------------------------


def test_a_self_signed_card_is_refused_as_self_signed(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    refused(validator, authority.issue("p256", self_signed=True).der, "self_signed")


def test_a_root_ca_presented_as_a_card_is_self_signed(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    refused(validator, authority.root.public_bytes(Encoding.DER), "self_signed")


def test_an_issuing_ca_presented_as_a_card_is_refused(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    with pytest.raises(CardRefused) as info:
        validator.validate(authority.issuing.public_bytes(Encoding.DER))
    assert info.value.reason in ("untrusted_issuer", "wrong_key_usage")


def test_a_card_of_another_authority_is_untrusted(
    validator: CardCertificateValidator, other_authority: CardAuthority
) -> None:
    """Same names, other keys: only the signatures tell them apart."""
    refused(validator, other_authority.issue("p256").der, "untrusted_issuer")


def test_a_card_naming_the_trusted_issuer_but_signed_by_another_key_is_untrusted(
    validator: CardCertificateValidator, authority: CardAuthority, other_authority: CardAuthority
) -> None:
    forged = authority.issue("p256", signer=other_authority.issuing_key)
    refused(validator, forged.der, "untrusted_issuer")


def test_a_card_with_basic_constraints_ca_is_refused(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    card = authority.issue("p256", extra=[(x509.BasicConstraints(ca=True, path_length=None), True)])
    refused(validator, card.der, "untrusted_issuer")


def test_an_unknown_critical_extension_is_refused(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    refused(validator, authority.issue("p256", extra=[(unknown, True)]).der, "untrusted_issuer")


def test_a_card_with_an_email_san_and_no_aki_is_accepted(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    san = x509.SubjectAlternativeName([x509.RFC822Name("anne.muller@example.lu")])
    validator.validate(authority.issue("p256", extra=[(san, False)]).der)


# --- the card's key ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["rsa1024", "k256", "ed25519"])
def test_a_weak_or_unusable_key_is_refused(
    validator: CardCertificateValidator, authority: CardAuthority, key: str
) -> None:
    refused(validator, authority.issue(key).der, "unsupported_key")


# --- garbage -------------------------------------------------------------------------------------


@pytest.mark.parametrize("der", [b"", b"\x00", b"\x30\x00", b"garbage" * 20, b"\x30" * 20_000])
def test_garbage_is_a_malformed_certificate(
    validator: CardCertificateValidator, der: bytes
) -> None:
    refused(validator, der, "malformed_certificate")


def test_a_truncated_certificate_is_malformed(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    der = authority.issue("p256").der
    for cut in range(0, len(der), 37):
        refused(validator, der[:cut], "malformed_certificate")


def test_a_certificate_with_a_broken_extension_is_malformed(
    validator: CardCertificateValidator, authority: CardAuthority
) -> None:
    """A keyUsage whose value is not a BIT STRING: parsing the extensions fails."""
    broken = x509.UnrecognizedExtension(x509.OID_KEY_USAGE, b"\x05\x00")
    card = authority.issue("p256", usage=None, extra=[(broken, True)])
    refused(validator, card.der, "malformed_certificate")


# --- logging -------------------------------------------------------------------------------------


def test_every_refusal_is_logged_with_issuer_and_serial(
    validator: CardCertificateValidator,
    authority: CardAuthority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="authsvc.pki")
    card = authority.issue("p256", usage=None, serial=0xBEEF)
    refused(validator, card.der, "wrong_key_usage")
    (record,) = [r for r in caplog.records if r.name == "authsvc.pki"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "reason=wrong_key_usage" in message
    assert "CN=Test Issuing CA" in message
    assert "serial=beef" in message
    assert record.card_reason == "wrong_key_usage"  # type: ignore[attr-defined]
    assert record.card_serial == "beef"  # type: ignore[attr-defined]


def test_validation_needs_anchors(pki_clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="anchor"):
        CardCertificateValidator([], NoRevocationCheck(), pki_clock)


def test_the_chain_is_checked_at_the_injected_time(
    authority: CardAuthority, now: dt.datetime
) -> None:
    """The validity pre-check and the chain use the same clock: a card valid now passes both."""
    card = authority.issue(
        "p256", not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=1)
    )
    for at in (now - dt.timedelta(hours=23), now + dt.timedelta(hours=23)):
        CardCertificateValidator(authority.anchors, NoRevocationCheck(), FrozenClock(at)).validate(
            card.der
        )


def test_auth_usage_constant_is_what_luxembourg_cards_carry() -> None:
    assert AUTH_USAGE.digital_signature
    assert not AUTH_USAGE.key_cert_sign
