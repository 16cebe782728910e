"""CRL and OCSP, served for real over HTTP on 127.0.0.1; every problem fails closed."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from authsvc.clock import FrozenClock
from authsvc.pki.certificates import CardCertificateValidator
from authsvc.pki.errors import CardRefused
from authsvc.pki.revocation import (
    AllOf,
    CrlChecker,
    NoRevocationCheck,
    OcspChecker,
    RevocationChecker,
    Unavailable,
    fetch,
    revocation_checker,
)

from .authority import Card, CardAuthority, RevocationServer, closed_port_url, private_key


def refused(
    checker: RevocationChecker, card: Card, authority: CardAuthority, reason: str
) -> CardRefused:
    with pytest.raises(CardRefused) as info:
        checker.check(card.certificate, authority.issuing)
    assert info.value.reason == reason, (info.value.reason, info.value.detail)
    return info.value


@pytest.fixture
def crl_checker(pki_clock: FrozenClock) -> CrlChecker:
    return CrlChecker(pki_clock, max_age=300, timeout=2)


@pytest.fixture
def ocsp_checker(pki_clock: FrozenClock) -> OcspChecker:
    return OcspChecker(pki_clock, timeout=2)


# --- CRL -----------------------------------------------------------------------------------------


def test_a_card_not_on_the_crl_passes(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/issuing.crl")])
    server.routes["/issuing.crl"] = authority.crl_der(revoked=[12345, 67890])
    crl_checker.check(card.certificate, authority.issuing)
    assert server.hits["/issuing.crl"] == 1


def test_a_card_on_the_crl_is_refused_as_revoked_crl(
    crl_checker: CrlChecker,
    authority: CardAuthority,
    server: RevocationServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="authsvc.pki")
    card = authority.issue("p256", crl_urls=[server.url("/issuing.crl")])
    server.routes["/issuing.crl"] = authority.crl_der(revoked=[1, card.certificate.serial_number])
    exc = refused(crl_checker, card, authority, "revoked_crl")
    assert server.url("/issuing.crl") in (exc.detail or "")
    assert f"serial={card.serial}" in caplog.text


def test_the_validator_refuses_a_revoked_card(
    authority: CardAuthority, server: RevocationServer, pki_clock: FrozenClock
) -> None:
    card = authority.issue("rsa2048", crl_urls=[server.url("/c.crl")])
    server.routes["/c.crl"] = authority.crl_der(revoked=[card.certificate.serial_number])
    validator = CardCertificateValidator(
        authority.anchors, CrlChecker(pki_clock, max_age=60), pki_clock
    )
    with pytest.raises(CardRefused) as info:
        validator.validate(card.der)
    assert info.value.reason == "revoked_crl"


def test_an_unreachable_crl_is_refused(
    crl_checker: CrlChecker, authority: CardAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="authsvc.pki")
    url = closed_port_url("/down.crl")
    card = authority.issue("p256", crl_urls=[url])
    exc = refused(crl_checker, card, authority, "revocation_unavailable")
    assert url in (exc.detail or "")
    assert "unreachable" in (exc.detail or "")
    assert url in caplog.text  # the operator sees which URL failed
    assert "revocation" in exc.description.lower()
    assert url not in exc.description  # the person is not told


@pytest.mark.parametrize("status", [404, 500, 503])
def test_an_http_error_is_refused(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer, status: int
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = lambda body: (status, "text/plain", b"nope")
    exc = refused(crl_checker, card, authority, "revocation_unavailable")
    assert f"HTTP {status}" in (exc.detail or "")


def test_a_crl_with_a_bad_signature_is_refused(
    crl_checker: CrlChecker,
    authority: CardAuthority,
    other_authority: CardAuthority,
    server: RevocationServer,
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    # same issuer name, signed by another key: an empty CRL that would let a revoked card through
    server.routes["/x.crl"] = authority.crl_der(signer=other_authority.issuing_key)
    exc = refused(crl_checker, card, authority, "revocation_unavailable")
    assert "signature" in (exc.detail or "")


def test_a_tampered_crl_is_refused(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    der = bytearray(authority.crl_der(revoked=[card.certificate.serial_number]))
    serial_bytes = card.certificate.serial_number.to_bytes(20, "big").lstrip(b"\0")
    at = bytes(der).find(serial_bytes)
    der[at] ^= 0x01  # the card is no longer listed — and the signature no longer verifies
    server.routes["/x.crl"] = bytes(der)
    refused(crl_checker, card, authority, "revocation_unavailable")


def test_a_crl_of_another_issuer_is_refused(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der(issuer=authority.root.subject)
    exc = refused(crl_checker, card, authority, "revocation_unavailable")
    assert "issued by" in (exc.detail or "")


def test_a_stale_crl_is_never_used(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer, now: dt.datetime
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der(
        this_update=now - dt.timedelta(days=2), next_update=now - dt.timedelta(seconds=1)
    )
    exc = refused(crl_checker, card, authority, "revocation_unavailable")
    assert "stale" in (exc.detail or "")


def test_a_crl_from_the_future_is_refused(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer, now: dt.datetime
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der(this_update=now + dt.timedelta(hours=1))
    refused(crl_checker, card, authority, "revocation_unavailable")


@pytest.mark.parametrize(
    "body", [b"", b"garbage", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"]
)
def test_garbage_instead_of_a_crl_is_refused(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer, body: bytes
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = body
    refused(crl_checker, card, authority, "revocation_unavailable")


def test_a_pem_crl_is_read(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl(revoked=[card.certificate.serial_number]).public_bytes(
        Encoding.PEM
    )
    refused(crl_checker, card, authority, "revoked_crl")


def test_a_card_without_distribution_points_is_refused(
    crl_checker: CrlChecker, authority: CardAuthority
) -> None:
    exc = refused(crl_checker, authority.issue("p256"), authority, "revocation_unavailable")
    assert "no usable CRL distribution point" in (exc.detail or "")


def test_ldap_distribution_points_are_not_usable(
    crl_checker: CrlChecker, authority: CardAuthority
) -> None:
    card = authority.issue("p256", crl_urls=["ldap://ldap.example/cn=CA?certificateRevocationList"])
    refused(crl_checker, card, authority, "revocation_unavailable")


def test_a_delta_crl_is_not_used(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der(extensions=[(x509.DeltaCRLIndicator(1), True)])
    refused(crl_checker, card, authority, "revocation_unavailable")


def test_a_crl_for_another_distribution_point_is_not_used(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    """A partitioned CA: the CRL of partition 2 must not clear a card of partition 1."""
    card = authority.issue("p256", crl_urls=[server.url("/part1.crl")])
    idp = x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(server.url("/part2.crl"))],
        relative_name=None,
        only_contains_user_certs=True,
        only_contains_ca_certs=False,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    server.routes["/part1.crl"] = authority.crl_der(extensions=[(idp, True)])
    refused(crl_checker, card, authority, "revocation_unavailable")


def test_a_crl_for_this_distribution_point_is_used(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/part1.crl")])
    idp = x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(server.url("/part1.crl"))],
        relative_name=None,
        only_contains_user_certs=True,
        only_contains_ca_certs=False,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    server.routes["/part1.crl"] = authority.crl_der(extensions=[(idp, True)])
    crl_checker.check(card.certificate, authority.issuing)


def test_an_oversized_answer_is_refused(
    authority: CardAuthority, server: RevocationServer, pki_clock: FrozenClock
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der(revoked=range(1, 200))
    checker = CrlChecker(pki_clock, max_age=60, max_bytes=1000)
    exc = refused(checker, card, authority, "revocation_unavailable")
    assert "larger than" in (exc.detail or "")


def test_a_slow_source_times_out(
    authority: CardAuthority, server: RevocationServer, pki_clock: FrozenClock
) -> None:
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der()
    server.delay = 1.0
    checker = CrlChecker(pki_clock, max_age=60, timeout=0.2)
    refused(checker, card, authority, "revocation_unavailable")


def test_the_second_distribution_point_is_tried_when_the_first_fails(
    crl_checker: CrlChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", crl_urls=[closed_port_url(), server.url("/mirror.crl")])
    server.routes["/mirror.crl"] = authority.crl_der(revoked=[card.certificate.serial_number])
    refused(crl_checker, card, authority, "revoked_crl")


def test_a_file_url_is_read(
    crl_checker: CrlChecker, authority: CardAuthority, tmp_path: Path
) -> None:
    path = tmp_path / "issuing ca.crl"
    card = authority.issue("p256", crl_urls=[path.as_uri()])
    path.write_bytes(authority.crl_der())
    crl_checker.check(card.certificate, authority.issuing)
    path.write_bytes(authority.crl_der(revoked=[card.certificate.serial_number]))
    fresh = CrlChecker(FrozenClock(authority.now), max_age=0)
    refused(fresh, card, authority, "revoked_crl")


def test_a_missing_file_is_refused(
    crl_checker: CrlChecker, authority: CardAuthority, tmp_path: Path
) -> None:
    card = authority.issue("p256", crl_urls=[(tmp_path / "absent.crl").as_uri()])
    refused(crl_checker, card, authority, "revocation_unavailable")


# --- the CRL cache -------------------------------------------------------------------------------


def test_the_crl_is_cached_for_max_age(
    authority: CardAuthority, server: RevocationServer, pki_clock: FrozenClock
) -> None:
    checker = CrlChecker(pki_clock, max_age=300)
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der()  # nextUpdate in 23 hours
    for _ in range(5):
        checker.check(card.certificate, authority.issuing)
    assert server.hits["/x.crl"] == 1

    # revoked at the CA: still cached, so still accepted until max-age has passed …
    server.routes["/x.crl"] = authority.crl_der(revoked=[card.certificate.serial_number], number=2)
    pki_clock.advance(seconds=299)
    checker.check(card.certificate, authority.issuing)
    assert server.hits["/x.crl"] == 1
    # … and refused as soon as it has
    pki_clock.advance(seconds=1)
    refused(checker, card, authority, "revoked_crl")
    assert server.hits["/x.crl"] == 2


def test_the_crl_cache_never_outlives_next_update(
    authority: CardAuthority, server: RevocationServer, now: dt.datetime
) -> None:
    clock = FrozenClock(now)
    checker = CrlChecker(clock, max_age=3600)
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der(next_update=now + dt.timedelta(seconds=60))
    checker.check(card.certificate, authority.issuing)
    clock.advance(seconds=59)
    checker.check(card.certificate, authority.issuing)
    assert server.hits["/x.crl"] == 1
    # at nextUpdate the cached CRL is not used any more; the CA still serves the same (now stale) one
    clock.advance(seconds=1)
    exc = refused(checker, card, authority, "revocation_unavailable")
    assert "stale" in (exc.detail or "")
    assert server.hits["/x.crl"] == 2
    # the CA publishes a new one: accepted again
    server.routes["/x.crl"] = authority.crl_der(
        this_update=now, next_update=now + dt.timedelta(days=1)
    )
    clock.advance(seconds=11)  # past the failure back-off
    checker.check(card.certificate, authority.issuing)
    assert server.hits["/x.crl"] == 3


def test_max_age_zero_fetches_every_time(
    authority: CardAuthority, server: RevocationServer, pki_clock: FrozenClock
) -> None:
    checker = CrlChecker(pki_clock, max_age=0)
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der()
    for _ in range(3):
        checker.check(card.certificate, authority.issuing)
    assert server.hits["/x.crl"] == 3


def test_a_failed_fetch_is_not_retried_at_once(
    authority: CardAuthority, server: RevocationServer, pki_clock: FrozenClock
) -> None:
    checker = CrlChecker(pki_clock, max_age=300)
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = lambda body: (503, "text/plain", b"down")
    refused(checker, card, authority, "revocation_unavailable")
    server.routes["/x.crl"] = authority.crl_der()
    exc = refused(checker, card, authority, "revocation_unavailable")  # back-off: not fetched
    assert "failed recently" in (exc.detail or "")
    assert server.hits["/x.crl"] == 1
    pki_clock.advance(seconds=10)
    checker.check(card.certificate, authority.issuing)
    assert server.hits["/x.crl"] == 2


def test_the_cache_is_per_issuer(
    authority: CardAuthority,
    other_authority: CardAuthority,
    server: RevocationServer,
    pki_clock: FrozenClock,
) -> None:
    """A CRL verified for one CA is not believed for another CA naming the same URL."""
    checker = CrlChecker(pki_clock, max_age=300)
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der()
    checker.check(card.certificate, authority.issuing)
    stranger = other_authority.issue("p256", crl_urls=[server.url("/x.crl")])
    with pytest.raises(CardRefused) as info:
        checker.check(stranger.certificate, other_authority.issuing)
    assert info.value.reason == "revocation_unavailable"


def test_concurrent_checks_share_one_fetch(
    authority: CardAuthority, server: RevocationServer, pki_clock: FrozenClock
) -> None:
    checker = CrlChecker(pki_clock, max_age=300)
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der(revoked=range(1, 2000))
    server.delay = 0.2
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def check() -> None:
        try:
            barrier.wait()
            checker.check(card.certificate, authority.issuing)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert server.hits["/x.crl"] == 1


def test_the_cached_crl_holds_a_set_of_serials(
    authority: CardAuthority, server: RevocationServer, pki_clock: FrozenClock
) -> None:
    checker = CrlChecker(pki_clock, max_age=300)
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")])
    server.routes["/x.crl"] = authority.crl_der(revoked=[5, 7, 11])
    point = card.certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0]
    cached = checker.crl_for(server.url("/x.crl"), point, authority.issuing)
    assert cached.revoked == frozenset({5, 7, 11})
    assert isinstance(cached.revoked, frozenset)
    assert cached.reuse_until == cached.fetched_at + dt.timedelta(seconds=300)
    assert cached.crl_number == 1


# --- OCSP ----------------------------------------------------------------------------------------


def ocsp_route(
    authority: CardAuthority, **kwargs: object
) -> Callable[[bytes], tuple[int, str, bytes]]:
    def answer(body: bytes) -> tuple[int, str, bytes]:
        return 200, "application/ocsp-response", authority.ocsp_response(body, **kwargs)  # type: ignore[arg-type]

    return answer


def test_ocsp_good_passes(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = ocsp_route(authority)
    ocsp_checker.check(card.certificate, authority.issuing)
    ((method, path, headers, body),) = server.requests
    assert (method, path) == ("POST", "/ocsp")
    assert headers["Content-Type"] == "application/ocsp-request"
    request = ocsp.load_der_ocsp_request(body)
    assert request.serial_number == card.certificate.serial_number
    assert request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce


def test_ocsp_revoked_is_refused_as_revoked_ocsp(
    ocsp_checker: OcspChecker,
    authority: CardAuthority,
    server: RevocationServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="authsvc.pki")
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = ocsp_route(authority, status=ocsp.OCSPCertStatus.REVOKED)
    exc = refused(ocsp_checker, card, authority, "revoked_ocsp")
    assert "keyCompromise" in (exc.detail or "")
    assert server.url("/ocsp") in caplog.text


def test_ocsp_unknown_is_refused(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = ocsp_route(authority, status=ocsp.OCSPCertStatus.UNKNOWN)
    refused(ocsp_checker, card, authority, "revocation_unavailable")


def test_an_unreachable_responder_is_refused(
    ocsp_checker: OcspChecker, authority: CardAuthority
) -> None:
    card = authority.issue("p256", ocsp_urls=[closed_port_url("/ocsp")])
    refused(ocsp_checker, card, authority, "revocation_unavailable")


def test_a_card_without_an_ocsp_responder_is_refused(
    ocsp_checker: OcspChecker, authority: CardAuthority
) -> None:
    refused(ocsp_checker, authority.issue("p256"), authority, "revocation_unavailable")


@pytest.mark.parametrize(
    "status",
    [
        ocsp.OCSPResponseStatus.TRY_LATER,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
        ocsp.OCSPResponseStatus.INTERNAL_ERROR,
    ],
)
def test_an_unsuccessful_ocsp_response_is_refused(
    ocsp_checker: OcspChecker,
    authority: CardAuthority,
    server: RevocationServer,
    status: ocsp.OCSPResponseStatus,
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    body = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER)
    server.routes["/ocsp"] = lambda _: (200, "application/ocsp-response", body)
    exc = refused(ocsp_checker, card, authority, "revocation_unavailable")
    assert status.name in (exc.detail or "")


def test_an_ocsp_response_signed_by_another_key_is_refused(
    ocsp_checker: OcspChecker,
    authority: CardAuthority,
    other_authority: CardAuthority,
    server: RevocationServer,
) -> None:
    """Named as the trusted issuing CA (same name), signed with another key."""
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    assert other_authority.issuing.subject == authority.issuing.subject
    server.routes["/ocsp"] = ocsp_route(
        authority, signer=other_authority.issuing_key, impersonate=other_authority.issuing
    )
    exc = refused(ocsp_checker, card, authority, "revocation_unavailable")
    assert "signature" in (exc.detail or "")


def test_a_tampered_ocsp_response_is_refused(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])

    def tampered(body: bytes) -> tuple[int, str, bytes]:
        der = bytearray(authority.ocsp_response(body, status=ocsp.OCSPCertStatus.GOOD))
        der[-1] ^= 0x01  # the end of the signature
        return 200, "application/ocsp-response", bytes(der)

    server.routes["/ocsp"] = tampered
    refused(ocsp_checker, card, authority, "revocation_unavailable")


def test_a_delegated_responder_with_the_ocsp_signing_eku_is_accepted(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = ocsp_route(authority, responder=authority.responder())
    ocsp_checker.check(card.certificate, authority.issuing)
    server.routes["/ocsp"] = ocsp_route(
        authority, responder=authority.responder(), status=ocsp.OCSPCertStatus.REVOKED
    )
    refused(ocsp_checker, card, authority, "revoked_ocsp")


def test_a_delegated_responder_without_the_eku_is_refused(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = ocsp_route(authority, responder=authority.responder(eku=False))
    exc = refused(ocsp_checker, card, authority, "revocation_unavailable")
    assert "OCSPSigning" in (exc.detail or "")


def test_a_responder_not_issued_by_the_ca_is_refused(
    ocsp_checker: OcspChecker,
    authority: CardAuthority,
    other_authority: CardAuthority,
    server: RevocationServer,
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    rogue = authority.responder(signer=other_authority.issuing_key)
    server.routes["/ocsp"] = ocsp_route(authority, responder=rogue)
    exc = refused(ocsp_checker, card, authority, "revocation_unavailable")
    assert "not issued by" in (exc.detail or "")


def test_an_ocsp_answer_about_another_certificate_is_refused(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    other = authority.issue("p256")
    server.routes["/ocsp"] = ocsp_route(authority, about=other.certificate)
    exc = refused(ocsp_checker, card, authority, "revocation_unavailable")
    assert "not about" in (exc.detail or "")


def test_a_stale_ocsp_answer_is_refused(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer, now: dt.datetime
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = ocsp_route(
        authority, this_update=now - dt.timedelta(days=2), next_update=now - dt.timedelta(seconds=1)
    )
    exc = refused(ocsp_checker, card, authority, "revocation_unavailable")
    assert "stale" in (exc.detail or "")


def test_an_old_ocsp_answer_without_next_update_is_refused(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer, now: dt.datetime
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = ocsp_route(
        authority, this_update=now - dt.timedelta(hours=1), next_update=None
    )
    refused(ocsp_checker, card, authority, "revocation_unavailable")
    server.routes["/ocsp"] = ocsp_route(
        authority, this_update=now - dt.timedelta(seconds=30), next_update=None
    )
    ocsp_checker.check(card.certificate, authority.issuing)


def test_an_ocsp_answer_from_the_future_is_refused(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer, now: dt.datetime
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = ocsp_route(authority, this_update=now + dt.timedelta(hours=1))
    refused(ocsp_checker, card, authority, "revocation_unavailable")


def test_an_ocsp_answer_with_another_nonce_is_refused(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = ocsp_route(authority, nonce=b"replayed answer!")
    exc = refused(ocsp_checker, card, authority, "revocation_unavailable")
    assert "nonce" in (exc.detail or "")


def test_an_ocsp_answer_without_a_nonce_is_accepted_when_fresh(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = ocsp_route(authority, nonce=False)
    ocsp_checker.check(card.certificate, authority.issuing)


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x03\x0a\x01\x00"])
def test_garbage_instead_of_an_ocsp_response_is_refused(
    ocsp_checker: OcspChecker, authority: CardAuthority, server: RevocationServer, body: bytes
) -> None:
    card = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = lambda _: (200, "application/ocsp-response", body)
    refused(ocsp_checker, card, authority, "revocation_unavailable")


def test_an_rsa_issuing_ca_signs_ocsp_and_crls(
    now: dt.datetime, server: RevocationServer, pki_clock: FrozenClock
) -> None:
    authority = CardAuthority(now, label="RSA", key_index=7, issuing_key=private_key("rsa2048", 7))
    card = authority.issue(
        "rsa2048", ocsp_urls=[server.url("/ocsp")], crl_urls=[server.url("/x.crl")]
    )
    server.routes["/ocsp"] = ocsp_route(authority)
    server.routes["/x.crl"] = authority.crl_der()
    both = revocation_checker("crl+ocsp", clock=pki_clock, crl_max_age=60)
    both.check(card.certificate, authority.issuing)


# --- modes ---------------------------------------------------------------------------------------


def test_crl_plus_ocsp_needs_both(
    authority: CardAuthority, server: RevocationServer, pki_clock: FrozenClock
) -> None:
    checker = revocation_checker("crl+ocsp", clock=pki_clock, crl_max_age=60)
    assert isinstance(checker, AllOf)
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")], ocsp_urls=[server.url("/ocsp")])
    server.routes["/x.crl"] = authority.crl_der()
    server.routes["/ocsp"] = ocsp_route(authority)
    checker.check(card.certificate, authority.issuing)
    assert (server.hits["/x.crl"], server.hits["/ocsp"]) == (1, 1)

    server.routes["/ocsp"] = ocsp_route(authority, status=ocsp.OCSPCertStatus.REVOKED)
    refused(checker, card, authority, "revoked_ocsp")
    server.routes["/ocsp"] = lambda _: (503, "text/plain", b"down")
    refused(checker, card, authority, "revocation_unavailable")


def test_crl_plus_ocsp_refuses_a_card_on_the_crl(
    authority: CardAuthority, server: RevocationServer, pki_clock: FrozenClock
) -> None:
    checker = revocation_checker("crl+ocsp", clock=pki_clock, crl_max_age=60)
    card = authority.issue("p256", crl_urls=[server.url("/x.crl")], ocsp_urls=[server.url("/ocsp")])
    server.routes["/x.crl"] = authority.crl_der(revoked=[card.certificate.serial_number])
    server.routes["/ocsp"] = ocsp_route(authority)
    refused(checker, card, authority, "revoked_crl")


def test_modes(pki_clock: FrozenClock) -> None:
    assert isinstance(revocation_checker("none", clock=pki_clock, crl_max_age=1), NoRevocationCheck)
    assert isinstance(revocation_checker("crl", clock=pki_clock, crl_max_age=1), CrlChecker)
    assert isinstance(revocation_checker("ocsp", clock=pki_clock, crl_max_age=1), OcspChecker)
    with pytest.raises(ValueError, match="unknown revocation mode"):
        revocation_checker("sometimes", clock=pki_clock, crl_max_age=1)


def test_none_checks_nothing(authority: CardAuthority) -> None:
    NoRevocationCheck().check(authority.issue("p256").certificate, authority.issuing)


# --- fetch ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://example/x.crl", "ldap://example/x", "gopher://x", "file://otherhost/x.crl"]
)
def test_fetch_refuses_other_schemes(url: str) -> None:
    with pytest.raises(Unavailable):
        fetch(url, timeout=1, max_bytes=100)


def test_fetch_does_not_follow_a_redirect_to_another_scheme(
    server: RevocationServer, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("do not read")

    def redirect(_: bytes) -> tuple[int, str, bytes]:
        return 302, "text/plain", b""

    server.routes["/r"] = redirect
    with pytest.raises(Unavailable):
        fetch(server.url("/r"), timeout=1, max_bytes=100)


def test_anything_unexpected_in_fetched_data_fails_closed(
    crl_checker: CrlChecker,
    ocsp_checker: OcspChecker,
    authority: CardAuthority,
    server: RevocationServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CRLs and OCSP answers come over plain HTTP: whatever trips the parser is a refusal."""

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("lazily parsed field")

    card = authority.issue("p256", crl_urls=[server.url("/x.crl")], ocsp_urls=[server.url("/ocsp")])
    server.routes["/x.crl"] = authority.crl_der()
    server.routes["/ocsp"] = ocsp_route(authority)
    monkeypatch.setattr(CrlChecker, "_verify", explode)
    monkeypatch.setattr(OcspChecker, "_single_for", explode)
    for checker in (crl_checker, ocsp_checker):
        exc = refused(checker, card, authority, "revocation_unavailable")
        assert "RuntimeError: lazily parsed field" in (exc.detail or "")
