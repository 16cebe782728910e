"""Revocation checks and fetches are counted by source and result, and timed; every refusal is
counted by reason (CRL and OCSP served for real over HTTP on 127.0.0.1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from cryptography.x509 import ocsp
from prometheus_client import REGISTRY

from authsvc.clock import FrozenClock
from authsvc.pki.errors import CardRefused
from authsvc.pki.revocation import CrlChecker, OcspChecker, RevocationChecker

from ..unit.pki.authority import CardAuthority, RevocationServer, closed_port_url

NOW = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def authority() -> CardAuthority:
    return CardAuthority(NOW, label="Test")


@pytest.fixture
def server() -> Iterator[RevocationServer]:
    srv = RevocationServer().start()
    yield srv
    srv.stop()


class Moved:
    """What moved in the process's registry since this object was made."""

    def __init__(self) -> None:
        self.before = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in REGISTRY.collect()
            for s in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        now = REGISTRY.get_sample_value(name, labels) or 0.0
        return now - self.before.get(key, 0.0)


def refused(checker: RevocationChecker, card, authority: CardAuthority) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(CardRefused) as info:
        checker.check(card.certificate, authority.issuing)
    return info.value.reason


def test_crl_checks_and_fetches(authority: CardAuthority, server: RevocationServer) -> None:
    moved = Moved()
    checker = CrlChecker(FrozenClock(NOW), max_age=300, timeout=2)
    good = authority.issue("p256", crl_urls=[server.url("/good.crl")])
    server.routes["/good.crl"] = authority.crl_der(revoked=[12345])
    checker.check(good.certificate, authority.issuing)
    checker.check(good.certificate, authority.issuing)  # from the cache: no fetch
    revoked = authority.issue("p256", crl_urls=[server.url("/revoked.crl")])
    server.routes["/revoked.crl"] = authority.crl_der(revoked=[revoked.certificate.serial_number])
    assert refused(checker, revoked, authority) == "revoked_crl"

    assert moved("authsvc_revocation_checks_total", source="crl", result="good") == 2
    assert moved("authsvc_revocation_checks_total", source="crl", result="revoked") == 1
    assert moved("authsvc_revocation_checks_total", source="crl", result="unavailable") == 0
    assert moved("authsvc_revocation_check_duration_seconds_count", source="crl") == 3
    assert moved("authsvc_revocation_fetches_total", source="crl", result="ok") == 2
    assert moved("authsvc_revocation_fetch_duration_seconds_count", source="crl") == 2
    assert moved("authsvc_card_refusals_total", reason="revoked_crl") == 1


def test_an_unreachable_crl_is_a_failure_and_a_refusal(authority: CardAuthority) -> None:
    moved = Moved()
    checker = CrlChecker(FrozenClock(NOW), max_age=300, timeout=2)
    card = authority.issue("p256", crl_urls=[closed_port_url("/down.crl")])
    assert refused(checker, card, authority) == "revocation_unavailable"
    assert refused(checker, card, authority) == "revocation_unavailable"  # backing off: no fetch
    assert moved("authsvc_revocation_checks_total", source="crl", result="unavailable") == 2
    assert moved("authsvc_revocation_fetches_total", source="crl", result="failed") == 1
    assert moved("authsvc_revocation_fetches_total", source="crl", result="ok") == 0
    assert moved("authsvc_card_refusals_total", reason="revocation_unavailable") == 2


def test_a_crl_that_does_not_verify_is_a_failed_fetch(
    authority: CardAuthority, server: RevocationServer
) -> None:
    moved = Moved()
    checker = CrlChecker(FrozenClock(NOW), max_age=300, timeout=2)
    card = authority.issue("p256", crl_urls=[server.url("/bad.crl")])
    server.routes["/bad.crl"] = b"not a CRL"
    assert refused(checker, card, authority) == "revocation_unavailable"
    assert moved("authsvc_revocation_fetches_total", source="crl", result="failed") == 1


def test_ocsp_checks(authority: CardAuthority, server: RevocationServer) -> None:
    moved = Moved()
    checker = OcspChecker(FrozenClock(NOW), timeout=2)
    good = authority.issue("p256", ocsp_urls=[server.url("/ocsp")])
    server.routes["/ocsp"] = lambda body: (
        200,
        "application/ocsp-response",
        authority.ocsp_response(body),
    )
    checker.check(good.certificate, authority.issuing)
    revoked = authority.issue("p256", ocsp_urls=[server.url("/ocsp-revoked")])
    server.routes["/ocsp-revoked"] = lambda body: (
        200,
        "application/ocsp-response",
        authority.ocsp_response(body, status=ocsp.OCSPCertStatus.REVOKED),
    )
    assert refused(checker, revoked, authority) == "revoked_ocsp"
    down = authority.issue("p256", ocsp_urls=[closed_port_url("/ocsp")])
    assert refused(checker, down, authority) == "revocation_unavailable"

    assert moved("authsvc_revocation_checks_total", source="ocsp", result="good") == 1
    assert moved("authsvc_revocation_checks_total", source="ocsp", result="revoked") == 1
    assert moved("authsvc_revocation_checks_total", source="ocsp", result="unavailable") == 1
    assert moved("authsvc_revocation_fetches_total", source="ocsp", result="ok") == 2
    assert moved("authsvc_revocation_fetches_total", source="ocsp", result="failed") == 1
    assert moved("authsvc_revocation_fetch_duration_seconds_count", source="ocsp") == 3
    assert moved("authsvc_revocation_checks_total", source="crl", result="good") == 0
