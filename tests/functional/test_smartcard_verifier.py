"""SmartcardVerifier end to end on the database: challenge, token, certificate, revocation, helpdesk."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509 import ocsp
from sqlalchemy import select

from authsvc.audit import service as audit
from authsvc.audit.models import AuditEvent
from authsvc.audit.tags import EventTag
from authsvc.clock import FrozenClock
from authsvc.config import Settings
from authsvc.db import Database
from authsvc.errors import ConfigError, InvalidInput
from authsvc.pki import SmartcardVerifier
from authsvc.pki.challenges import Challenge, issue_challenge
from authsvc.pki.errors import CardRefused, Reason
from authsvc.pki.revocation import OcspChecker
from authsvc.pki.revoked_cards import (
    find_revoked_card,
    is_revoked_by_helpdesk,
    normalize_serial,
    revoke_card,
)

from ..unit.pki.authority import Card, CardAuthority, RevocationServer, make_token

FLOW = "flow-0123456789abcdef0123456789abcdef"


@pytest.fixture
def authority(clock: FrozenClock) -> CardAuthority:
    return CardAuthority(clock.now(), label="Functional", key_index=20)


@pytest.fixture
def crl_path(tmp_path: Path, authority: CardAuthority) -> Path:
    """The issuing CA's CRL, published as a file: URL (``AUTHSVC_CARD_REVOCATION=crl``)."""
    path = tmp_path / "issuing.crl"
    path.write_bytes(authority.crl_der())
    return path


@pytest.fixture
def anchors(settings: Settings, authority: CardAuthority) -> Path:
    """The anchors at the default place, ``<instance>/demo-ca/trust-anchors.pem``."""
    path = settings.card_trust_anchors
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(authority.anchors_pem())
    return path


@pytest.fixture
def verifier(settings: Settings, clock: FrozenClock, anchors: Path) -> SmartcardVerifier:
    assert settings.card_revocation == "crl"  # the default: CRLs, fail closed
    return SmartcardVerifier(settings, clock)


@pytest.fixture
def card(authority: CardAuthority, crl_path: Path) -> Card:
    return authority.issue("p256", crl_urls=[crl_path.as_uri()])


def challenge(db: Database, clock: FrozenClock, flow: str = FLOW) -> Challenge:
    with db.transaction() as s:
        return issue_challenge(s, flow, "http://127.0.0.1:5000", clock)


def token_for(card: Card, issued: Challenge, algorithm: str = "ES256", **kw: Any) -> dict[str, Any]:
    return make_token(card, algorithm, origin=issued.origin, nonce=issued.nonce, **kw)


def reason_of(call: Callable[[], object]) -> str:
    with pytest.raises(CardRefused) as info:
        call()
    assert info.value.code == "invalid_card"
    assert info.value.status == 400
    assert f"(reason: {info.value.reason})" in info.value.to_dict()["error_description"]
    return info.value.reason


# --- the happy path ------------------------------------------------------------------------------


def test_a_good_card_is_verified_and_the_challenge_used(
    verifier: SmartcardVerifier, db: Database, clock: FrozenClock, card: Card
) -> None:
    issued = challenge(db, clock)
    result = verifier.verify(db, FLOW, token_for(card, issued))
    assert result.certificate == card.certificate
    assert (result.issuer, result.serial) == (card.issuer, card.serial)
    assert (result.given_name, result.surname) == ("Anne", "Muller")
    # replayed
    assert reason_of(lambda: verifier.verify(db, FLOW, token_for(card, issued))) == "challenge_used"


@pytest.mark.parametrize(
    ("algorithm", "key"), [("ES384", "p384"), ("RS256", "rsa2048"), ("PS512", "rsa2048")]
)
def test_other_algorithms_end_to_end(
    verifier: SmartcardVerifier,
    db: Database,
    clock: FrozenClock,
    authority: CardAuthority,
    crl_path: Path,
    algorithm: str,
    key: str,
) -> None:
    card = authority.issue(key, crl_urls=[crl_path.as_uri()])
    issued = challenge(db, clock)
    verifier.verify(db, FLOW, token_for(card, issued, algorithm))


def test_the_origin_is_the_issuers(
    verifier: SmartcardVerifier, db: Database, clock: FrozenClock, card: Card
) -> None:
    assert verifier.origin == "http://127.0.0.1:5000"
    issued = challenge(db, clock)
    token = make_token(card, "ES256", origin="http://127.0.0.1:5001", nonce=issued.nonce)
    assert reason_of(lambda: verifier.verify(db, FLOW, token)) == "bad_signature"


# --- single use, even when verification fails ----------------------------------------------------


@pytest.mark.parametrize(
    "spoil",
    [
        lambda t: {**t, "signature": t["signature"][:-8] + "AAAAAAA="},
        lambda t: {**t, "format": "web-eid:2"},
        lambda t: "not a token",
        lambda t: {**t, "unverifiedCertificate": "AAAA"},
    ],
)
def test_a_failed_attempt_uses_up_the_challenge(
    verifier: SmartcardVerifier,
    db: Database,
    clock: FrozenClock,
    card: Card,
    spoil: Callable[[dict[str, Any]], object],
) -> None:
    issued = challenge(db, clock)
    good = token_for(card, issued)
    reason_of(lambda: verifier.verify(db, FLOW, spoil(good)))
    assert reason_of(lambda: verifier.verify(db, FLOW, good)) == "challenge_used"


def test_an_expired_challenge_is_refused(
    verifier: SmartcardVerifier, db: Database, clock: FrozenClock, card: Card
) -> None:
    issued = challenge(db, clock)
    clock.advance(minutes=5, seconds=1)
    assert (
        reason_of(lambda: verifier.verify(db, FLOW, token_for(card, issued))) == "challenge_expired"
    )


def test_a_token_signed_for_a_superseded_challenge_is_refused(
    verifier: SmartcardVerifier, db: Database, clock: FrozenClock, card: Card
) -> None:
    first = challenge(db, clock)
    challenge(db, clock)  # the page asked again
    assert reason_of(lambda: verifier.verify(db, FLOW, token_for(card, first))) == "bad_signature"


def test_a_challenge_of_another_flow_does_not_help(
    verifier: SmartcardVerifier, db: Database, clock: FrozenClock, card: Card
) -> None:
    other = challenge(db, clock, flow="another-flow")
    assert reason_of(lambda: verifier.verify(db, FLOW, token_for(card, other))) == "challenge_used"


# --- the helpdesk's list -------------------------------------------------------------------------


def test_a_card_revoked_by_the_helpdesk_is_refused(
    verifier: SmartcardVerifier, db: Database, clock: FrozenClock, card: Card
) -> None:
    with db.transaction() as s:
        entry, new = revoke_card(
            s, issuer=card.issuer, serial=card.serial, reason="stolen", actor="staff:1", clock=clock
        )
    assert new
    assert (entry.reason, entry.revoked_by) == ("stolen", "staff:1")
    issued = challenge(db, clock)
    assert (
        reason_of(lambda: verifier.verify(db, FLOW, token_for(card, issued))) == "revoked_helpdesk"
    )


def test_the_helpdesk_refusal_is_told_only_to_the_cards_holder(
    verifier: SmartcardVerifier, db: Database, clock: FrozenClock, card: Card
) -> None:
    """Signature and certificate come first: someone with only the certificate learns nothing."""
    with db.transaction() as s:
        revoke_card(
            s, issuer=card.issuer, serial=card.serial, reason="lost", actor="t", clock=clock
        )
    issued = challenge(db, clock)
    forged = token_for(card, issued, signature=b"\x01" * 64)
    assert reason_of(lambda: verifier.verify(db, FLOW, forged)) == "bad_signature"


def test_revoking_a_card_is_audited_once(db: Database, clock: FrozenClock, card: Card) -> None:
    for _ in range(2):
        with db.transaction() as s:
            revoke_card(
                s,
                issuer=card.issuer,
                serial=card.serial.upper(),
                reason="damaged",
                actor="cli:root",
                clock=clock,
                subject="professional:1970051700012",
            )
    with db.transaction() as s:
        events = s.scalars(select(AuditEvent)).all()
        assert [e.tag for e in events] == [EventTag.CARD_CERTIFICATE_REVOKED]
        assert events[0].data == {"issuer": card.issuer, "serial": card.serial, "reason": "damaged"}
        assert events[0].subject == "professional:1970051700012"
        assert events[0].actor == "cli:root"
        assert audit.verify(s).ok
        assert is_revoked_by_helpdesk(s, card.issuer, card.serial)
        assert not is_revoked_by_helpdesk(s, card.issuer, "1")
        entry = find_revoked_card(s, card.issuer, card.serial)
        assert entry is not None
        assert entry.serial == card.serial


@pytest.mark.parametrize("reason", ["", "LOST?", "expired", "revoked"])
def test_a_revocation_needs_a_known_reason(db: Database, clock: FrozenClock, reason: str) -> None:
    with pytest.raises(InvalidInput, match="reason"), db.transaction() as s:
        revoke_card(s, issuer="CN=CA", serial="01", reason=reason, actor="t", clock=clock)


def test_serials_are_normalised() -> None:
    assert normalize_serial("0A:1B") == "a1b"
    assert normalize_serial("00") == "0"
    assert normalize_serial(" 4e 5f ") == "4e5f"
    for bad in ("", "xyz", "12-34", "0x12", "1" * 65):
        with pytest.raises(InvalidInput):
            normalize_serial(bad)


@pytest.mark.postgresql_only
def test_two_agents_revoking_the_same_card_at_once(db: Database, clock: FrozenClock) -> None:
    barrier = threading.Barrier(6)
    results: list[bool] = []
    errors: list[BaseException] = []

    def revoke() -> None:
        try:
            barrier.wait()
            with db.transaction() as s:
                results.append(
                    revoke_card(
                        s, issuer="CN=CA", serial="abc", reason="lost", actor="t", clock=clock
                    )[1]
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=revoke) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [False] * 5 + [True]
    with db.transaction() as s:
        assert len(s.scalars(select(AuditEvent)).all()) == 1


# --- trust anchors: loaded once, reloaded when the file changes ----------------------------------


def _rewrite(path: Path, content: bytes) -> None:
    before = path.stat().st_mtime_ns
    path.write_bytes(content)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_anchors_are_reloaded_when_the_file_changes(
    verifier: SmartcardVerifier,
    db: Database,
    clock: FrozenClock,
    anchors: Path,
    tmp_path: Path,
) -> None:
    newcomer = CardAuthority(clock.now(), label="Newcomer", key_index=21)
    crl = tmp_path / "newcomer.crl"
    crl.write_bytes(newcomer.crl_der())
    card = newcomer.issue("p256", crl_urls=[crl.as_uri()])
    first = verifier.validator()
    assert verifier.validator() is first  # cached while the file is unchanged
    assert reason_of(lambda: verifier.verify(db, FLOW, token_for(card, challenge(db, clock)))) == (
        "untrusted_issuer"
    )
    _rewrite(anchors, anchors.read_bytes() + newcomer.anchors_pem())
    verifier.verify(db, FLOW, token_for(card, challenge(db, clock)))
    assert verifier.validator() is not first


def test_a_broken_anchors_file_never_falls_back_to_the_old_anchors(
    verifier: SmartcardVerifier, db: Database, clock: FrozenClock, card: Card, anchors: Path
) -> None:
    verifier.verify(db, FLOW, token_for(card, challenge(db, clock)))
    _rewrite(anchors, b"oops, truncated")
    with pytest.raises(ConfigError, match="AUTHSVC_CARD_TRUST_ANCHORS"):
        verifier.verify(db, FLOW, token_for(card, challenge(db, clock)))
    anchors.unlink()
    with pytest.raises(ConfigError, match=r"AUTHSVC_CARD_TRUST_ANCHORS: .* does not exist"):
        verifier.verify(db, FLOW, token_for(card, challenge(db, clock)))


def test_verify_token_needs_no_database(
    settings: Settings, clock: FrozenClock, anchors: Path, card: Card
) -> None:
    """What the SoftHSM integration tests can call with a challenge of their own."""
    verifier = SmartcardVerifier(settings, clock)
    issued = Challenge(nonce="bm9uY2U=", origin=verifier.origin, expires_at=clock.now())
    result = verifier.verify_token(issued, token_for(card, issued))
    assert result.serial == card.serial


# --- logging -------------------------------------------------------------------------------------


def test_a_refusal_is_logged_once(
    verifier: SmartcardVerifier,
    db: Database,
    clock: FrozenClock,
    card: Card,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="authsvc.pki")
    issued = challenge(db, clock)
    token = token_for(card, issued, signature=b"\x02" * 64)
    reason_of(lambda: verifier.verify(db, FLOW, token))
    records = [r for r in caplog.records if r.name == "authsvc.pki"]
    assert len(records) == 1
    assert "reason=bad_signature" in records[0].getMessage()
    assert f"serial={card.serial}" in records[0].getMessage()
    assert token["signature"] not in caplog.text
    assert issued.nonce not in caplog.text


# --- every reason, through the facade ------------------------------------------------------------


@pytest.fixture
def ocsp_server(authority: CardAuthority) -> Iterator[RevocationServer]:
    server = RevocationServer().start()
    server.routes["/ocsp"] = lambda body: (
        200,
        "application/ocsp-response",
        authority.ocsp_response(body, status=ocsp.OCSPCertStatus.REVOKED),
    )
    yield server
    server.stop()


def test_every_reason_is_produced_and_distinct(
    settings: Settings,
    db: Database,
    clock: FrozenClock,
    anchors: Path,
    authority: CardAuthority,
    crl_path: Path,
    tmp_path: Path,
    ocsp_server: RevocationServer,
) -> None:
    verifier = SmartcardVerifier(settings, clock)
    now = clock.now()
    crl = [crl_path.as_uri()]
    stranger = CardAuthority(now, label="Functional", key_index=22)  # same names, other keys

    def attempt(make: Callable[[Challenge], object], using: SmartcardVerifier = verifier) -> str:
        issued = challenge(db, clock)
        return reason_of(lambda: using.verify(db, FLOW, make(issued)))

    def card(**kw: Any) -> Card:
        kw.setdefault("crl_urls", crl)
        return authority.issue(kw.pop("key", "p256"), **kw)

    good = card()
    revoked = card()
    crl_path.write_bytes(authority.crl_der(revoked=[revoked.certificate.serial_number]))
    helpdesk = card()
    with db.transaction() as s:
        revoke_card(
            s, issuer=helpdesk.issuer, serial=helpdesk.serial, reason="lost", actor="t", clock=clock
        )
    ocsp_revoked = card(ocsp_urls=[ocsp_server.url("/ocsp")])
    ocsp_verifier = SmartcardVerifier(settings, clock, revocation=OcspChecker(clock, timeout=2))

    produced = {
        attempt(lambda c: ["not", "an", "object"]),
        attempt(lambda c: {**token_for(good, c), "unverifiedCertificate": "AAAA"}),
        attempt(lambda c: {**token_for(good, c), "algorithm": "HS256"}),
        attempt(lambda c: token_for(card(key="p384"), c, "ES256", signature=b"\0" * 64)),
        attempt(lambda c: token_for(good, c, signature=b"\1" * 64)),
        attempt(lambda c: token_for(card(not_after=now - dt.timedelta(seconds=1)), c)),
        attempt(lambda c: token_for(card(not_before=now + dt.timedelta(days=1)), c)),
        attempt(lambda c: token_for(card(self_signed=True), c)),
        attempt(lambda c: token_for(card(usage=None), c)),
        attempt(lambda c: token_for(card(eku=[x509_oid("SERVER_AUTH")]), c)),
        attempt(lambda c: token_for(card(key="rsa1024"), c, "RS256")),
        attempt(lambda c: token_for(stranger.issue("p256", crl_urls=crl), c)),
        attempt(lambda c: token_for(revoked, c)),
        attempt(lambda c: token_for(ocsp_revoked, c), using=ocsp_verifier),
        attempt(lambda c: token_for(helpdesk, c)),
        attempt(lambda c: token_for(card(crl_urls=[(tmp_path / "absent.crl").as_uri()]), c)),
    }
    # the challenge reasons
    issued = challenge(db, clock)
    verifier.verify(db, FLOW, token_for(good, issued))
    produced.add(reason_of(lambda: verifier.verify(db, FLOW, token_for(good, issued))))
    issued = challenge(db, clock)
    clock.advance(minutes=6)
    produced.add(reason_of(lambda: verifier.verify(db, FLOW, token_for(good, issued))))

    assert produced == {r.value for r in Reason}
    assert len({r.value for r in Reason}) == len(Reason)


def x509_oid(name: str) -> Any:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    return getattr(ExtendedKeyUsageOID, name)
