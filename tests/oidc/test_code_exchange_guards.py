"""A code exchange's writes re-check what the exchange read (oidc/tokens.py ``new_grant_family``,
oidc/views.py ``_stale``): a session that ends, or a client that gets a new secret, between the
exchange's reads and its writes gets nothing issued — on SQLite, where the exchange reads first and
writes later (views._deferred), as on PostgreSQL, where the session could end between the read of
the grantee and the insert of the family. And a code, once shown, is used up, whatever the answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select, update

from authsvc.audit.models import AuditEvent
from authsvc.audit.tags import EventTag
from authsvc.oidc.models import AuthorizationCode, Client, TokenFamily
from authsvc.security.secrets import Purpose
from authsvc.sessions.models import ProviderSession
from authsvc.sessions.service import IDLE_TIMEOUT

from .conftest import pkce


def count(services: Any, what: Any, *where: Any) -> int:
    with services.db.read_transaction() as s:
        return int(s.scalar(select(func.count()).select_from(what).where(*where)) or 0)


def code_used(services: Any, code: str) -> bool:
    code_hash = services.hasher.hash(Purpose.AUTHORIZATION_CODE, code)
    with services.db.read_transaction() as s:
        row = s.get(AuthorizationCode, code_hash)
        return row is not None and row.used_at is not None


def meanwhile(monkeypatch: pytest.MonkeyPatch, services: Any, change: Any) -> None:
    """Make ``change`` (in a transaction of its own) right after the exchange has read the grantee,
    before it writes anything of the grant."""
    provider = services.oidc
    read = provider.grantee

    def grantee_then_change(*args: Any, **kwargs: Any) -> Any:
        found = read(*args, **kwargs)
        with services.db.transaction() as s:
            change(s)
        return found

    monkeypatch.setattr(provider, "grantee", grantee_then_change)


def test_a_session_ended_during_the_exchange_gets_nothing(  # type: ignore[no-untyped-def]
    browser, anne, rp, tokens, services, monkeypatch
) -> None:
    verifier, challenge = pkce()
    cb = browser().sign_in(rp, anne, code_challenge=challenge, code_challenge_method="S256")
    families = count(services, TokenFamily)
    issued = count(services, AuditEvent, AuditEvent.tag == EventTag.TOKENS_ISSUED)

    def end_the_session(s: Any) -> None:
        live = s.scalars(select(ProviderSession).where(ProviderSession.ended_at.is_(None))).one()
        services.sessions.end(s, live, "signed out", actor="test")

    meanwhile(monkeypatch, services, end_the_session)
    response = tokens.exchange(rp, cb["code"], verifier)
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_grant"
    assert response.headers["Cache-Control"] == "no-store"
    # nothing issued, nothing half-written; the code is used up all the same
    assert count(services, TokenFamily) == families
    assert count(services, AuditEvent, AuditEvent.tag == EventTag.TOKENS_ISSUED) == issued
    assert code_used(services, cb["code"])
    monkeypatch.undo()
    again = tokens.exchange(rp, cb["code"], verifier)
    assert again.status_code == 400 and again.json["error"] == "invalid_grant"


def test_a_new_client_secret_during_the_exchange_gets_nothing(  # type: ignore[no-untyped-def]
    browser, anne, rp, tokens, services, monkeypatch
) -> None:
    verifier, challenge = pkce()
    cb = browser().sign_in(rp, anne, code_challenge=challenge, code_challenge_method="S256")
    families = count(services, TokenFamily)

    def new_secret(s: Any) -> None:
        s.execute(
            update(Client)
            .where(Client.client_id == rp.client_id)
            .values(secret_hash=services.hasher.hash(Purpose.CLIENT_SECRET, "a-new-secret-0123"))
        )

    meanwhile(monkeypatch, services, new_secret)
    response = tokens.exchange(rp, cb["code"], verifier)
    assert response.status_code == 401, response.json
    assert response.json["error"] == "invalid_client"
    assert count(services, TokenFamily) == families
    assert code_used(services, cb["code"])


def test_a_failed_exchange_uses_the_code_up(browser, anne, rp, tokens, services) -> None:  # type: ignore[no-untyped-def]
    verifier, challenge = pkce()
    cb = browser().sign_in(rp, anne, code_challenge=challenge, code_challenge_method="S256")
    wrong = tokens.exchange(rp, cb["code"], pkce()[0])
    assert wrong.status_code == 400 and wrong.json["error"] == "invalid_grant", wrong.json
    assert code_used(services, cb["code"])
    right = tokens.exchange(rp, cb["code"], verifier)
    assert right.status_code == 400 and right.json["error"] == "invalid_grant"


def test_an_expired_code_is_used_up(browser, anne, rp, tokens, services, clock) -> None:  # type: ignore[no-untyped-def]
    verifier, challenge = pkce()
    cb = browser().sign_in(rp, anne, code_challenge=challenge, code_challenge_method="S256")
    clock.advance(seconds=61)
    response = tokens.exchange(rp, cb["code"], verifier)
    assert response.status_code == 400 and response.json["error"] == "invalid_grant"
    assert code_used(services, cb["code"])


def test_a_session_gone_idle_during_the_exchange_gets_nothing(  # type: ignore[no-untyped-def]
    browser, anne, rp, tokens, services, clock, monkeypatch
) -> None:
    """The idle rule is in the family's guard too: what the grantee read said, the write says."""
    verifier, challenge = pkce()
    cb = browser().sign_in(rp, anne, code_challenge=challenge, code_challenge_method="S256")
    families = count(services, TokenFamily)

    def idle(s: Any) -> None:
        s.execute(update(ProviderSession).values(last_seen_at=clock.now() - IDLE_TIMEOUT))

    meanwhile(monkeypatch, services, idle)
    response = tokens.exchange(rp, cb["code"], verifier)
    assert response.status_code == 400 and response.json["error"] == "invalid_grant"
    assert count(services, TokenFamily) == families
