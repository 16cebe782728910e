"""The card authority's CRL server down: a card is refused (``invalid_card``, reason
``revocation_unavailable``), never accepted — not on the strength of a CRL cached past
``AUTHSVC_CRL_MAX_AGE``, not while the failed fetch backs off — and accepted again once the CRL
can be read. End to end, through the sign-in API (the revocation checks themselves are unit-tested
in tests/unit/pki/test_revocation.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from authsvc.audit.models import AuditEvent
from softhsm.testca import RevocationServer, TestCA

from ..oidc.conftest import ANNE, activate, full_sign_in, pkce
from ..servers import free_port


@pytest.fixture
def authority(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestCA, RevocationServer]]:
    """A card authority of the test's own, whose CRL server the test stops and starts."""
    port = free_port()
    ca = TestCA.create(
        tmp_path_factory.mktemp("down-ca") / "ca", base_url=f"http://127.0.0.1:{port}"
    )
    server = RevocationServer(ca, port).start()
    yield ca, server
    server.stop()


@pytest.fixture
def env(env: dict[str, str], authority: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    anchors = str(Path(authority[0].trust_anchors))
    monkeypatch.setenv("AUTHSVC_CARD_TRUST_ANCHORS", anchors)
    monkeypatch.setenv("AUTHSVC_CARD_REVOCATION", "crl")
    return {**env, "AUTHSVC_CARD_TRUST_ANCHORS": anchors, "AUTHSVC_CARD_REVOCATION": "crl"}


def card_sign_in(browser: Any, rp: Any, person: Any) -> Any:
    b = browser()
    _, challenge = pkce()
    flow = b.flow_of(b.authorize(rp, code_challenge=challenge, code_challenge_method="S256"))
    return b.login_card(flow, person.card)


def test_a_card_is_refused_while_its_crl_cannot_be_read(  # type: ignore[no-untyped-def]
    services, directory, authority, softhsm, rp, browser, tokens, clock
) -> None:
    ca, server = authority
    anne = activate(services, ANNE, ca.issue_card(softhsm, given_name="Anne", family_name="Muller"))
    assert full_sign_in(browser(), rp, anne, tokens, method="card")["access_token"]  # CRL cached

    server.stop()
    clock.advance(seconds=services.settings.crl_max_age + 1)  # the cached CRL may not be reused
    for _ in range(2):  # the fetch fails, then backs off: refused both times, never accepted
        refused = card_sign_in(browser, rp, anne)
        assert refused.status_code == 400, refused.json
        assert refused.json["error"] == "invalid_card"
        assert "revocation status cannot be checked" in refused.json["error_description"]
    with services.db.read_transaction() as db:
        reasons = [
            e.data.get("reason")
            for e in db.scalars(select(AuditEvent).where(AuditEvent.tag == "login:attempt:failed"))
        ]
    assert reasons == ["revocation_unavailable", "revocation_unavailable"]

    server = RevocationServer(ca, server.port).start()
    try:
        clock.advance(seconds=11)  # past the failure back-off (10 s)
        assert card_sign_in(browser, rp, anne).status_code == 200
    finally:
        server.stop()
