"""A password sign-in (``Login.password``): one read-only unit of work before Argon2, one write
after it, the flow checked again there, and its audit events appended with one head lock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from authsvc.app import Services
from authsvc.audit import service as audit
from authsvc.audit.models import AuditEvent
from authsvc.login.models import LoginFlow
from authsvc.login.service import LoginError
from authsvc.oidc.claims import ACR_HIGH
from authsvc.security.passwords import PasswordHasher
from authsvc.sessions.models import ProviderSession

from ..signins import IP, password, start
from .conftest import PASSWORD, Person


@pytest.fixture
def statements(services: Services) -> Iterator[list[str]]:
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(services.db.engine, "before_cursor_execute", before)
    yield seen
    event.remove(services.db.engine, "before_cursor_execute", before)


def events(services: Services) -> list[AuditEvent]:
    with services.db.read_transaction() as db:
        return list(db.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


def test_sign_in_two_units_one_head_lock(
    services: Services, anne: Person, statements: list[str], db_kind: str
) -> None:
    flow = start(services)
    before = len(events(services))
    statements.clear()
    signed = password(services, flow, anne.matricule, PASSWORD)
    assert signed.opened.session.account_id == anne.account_id
    if db_kind == "sqlite":  # the read: one statement on its own (no BEGIN), then the write
        assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
        assert statements[0].startswith("SELECT")
        assert statements.index("BEGIN IMMEDIATE") == 1
    head_reads = [s for s in statements if s.startswith("SELECT") and "audit_chain_heads" in s]
    assert len(head_reads) == 1
    if db_kind == "postgresql":
        assert "FOR UPDATE" in head_reads[0]
    new = events(services)[before:]
    assert [e.tag for e in new] == ["session:session:opened", "login:attempt:succeeded"]
    assert [e.seq for e in new] == [before + 1, before + 2]
    assert new[1].prev_hash == new[0].hash
    assert new[1].data == {"method": "password", "client_id": "rp", "ip": IP}
    assert new[0].subject == f"session:{signed.opened.session.id[:12]}"
    with services.db.read_transaction() as db:
        assert audit.verify(db).ok
        stored = db.get(LoginFlow, flow[0])
        assert stored is not None and stored.account_id == anne.account_id
        assert stored.authenticated_at is not None


def test_flow_used_up_during_argon2_is_refused(
    services: Services, anne: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final write checks the flow again: what happened during Argon2 counts."""
    flow = start(services)
    verify = PasswordHasher.verify

    def slow_verify(self: PasswordHasher, stored: Any, secret: str) -> bool:
        with services.db.transaction() as db:  # meanwhile, the flow is used up
            row = db.get(LoginFlow, flow[0])
            assert row is not None
            row.completed_at = services.clock.now()
        return verify(self, stored, secret)

    monkeypatch.setattr(PasswordHasher, "verify", slow_verify)
    before = len(events(services))
    with pytest.raises(LoginError) as refused:
        password(services, flow, anne.matricule, PASSWORD)
    assert refused.value.code == "flow_expired"
    assert len(events(services)) == before
    with services.db.read_transaction() as db:
        assert db.scalars(select(ProviderSession)).all() == []


def test_checks_before_argon2_keep_their_order(
    services: Services, anne: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        PasswordHasher, "verify", lambda self, stored, secret: calls.append("argon2") or False
    )
    flow_id, binding, csrf = start(services)
    for args, error in [
        ((flow_id, "wrong binding", csrf), "flow_not_found"),
        ((flow_id, binding, "wrong csrf"), "invalid_csrf_token"),
        (start(services, acr=ACR_HIGH), "method_not_allowed"),
    ]:
        with pytest.raises(LoginError) as refused:
            password(services, args, anne.matricule, PASSWORD)
        assert refused.value.code == error
    assert calls == []
    for _ in range(5):
        with pytest.raises(LoginError) as refused:
            password(services, start(services), anne.matricule, "wrong")
        if refused.value.code == "too_many_requests":
            break
        assert refused.value.code == "invalid_credentials"
    assert refused.value.code == "too_many_requests"
    tries = len(calls)
    with pytest.raises(LoginError) as refused:  # throttled before the flow? no: flow first
        password(services, (flow_id, "wrong binding", csrf), anne.matricule, PASSWORD)
    assert refused.value.code == "flow_not_found"
    assert len(calls) == tries
