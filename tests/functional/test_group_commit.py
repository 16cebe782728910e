"""Deferred writes and group commit (authsvc.db): several requests' writes in one transaction,
each request's writes whole or not at all, each failure its own."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from authsvc.audit import service as audit
from authsvc.audit.models import AuditEvent
from authsvc.audit.tags import EventTag
from authsvc.db import Database, DeferredWrites, GroupCommit, StaleRead
from authsvc.oidc.clients import register
from authsvc.oidc.models import TokenFamily
from authsvc.oidc.tokens import Tokens


@pytest.fixture
def client_id(services: Any) -> str:
    with services.db.transaction() as s:
        return register(
            s,
            name="Connector",
            redirect_uris=[],
            grants=["client_credentials"],
            hasher=services.hasher,
            actor="test",
            clock=services.clock,
        ).client_id


def family_writes(services: Any, client_id: str, tag: str) -> DeferredWrites:
    """A family row (plain insert) and an audit event, as a token request records them."""
    writes = DeferredWrites()
    writes.execute(
        insert(TokenFamily.__table__),  # type: ignore[arg-type]
        {
            "id": uuid.uuid4(),
            "client_id": client_id,
            "account_id": None,
            "session_id": None,
            "scope": tag,
            "created_at": services.clock.now(),
        },
    )
    writes.later(
        lambda s: audit.record(
            s,
            EventTag.TOKENS_ISSUED,
            chain=audit.token_chain(s),
            actor=f"client:{client_id}",
            data={"scope": tag},
        )
    )
    return writes


def families(db: Database) -> list[str]:
    with db.read_transaction() as s:
        return sorted(s.scalars(select(TokenFamily.scope)))


def audit_ok(db: Database) -> int:
    with db.read_transaction() as s:
        result = audit.verify(s)
    assert result.ok, result.problems
    return result.events


def test_writes_wait_for_the_commit_and_arrive_together(services: Any, client_id: str) -> None:
    """While one request commits, those that arrive wait and are then committed together, in one
    transaction; every one of them returns only once its writes are in the database."""
    commits = GroupCommit(services.db, around=audit.batch)
    events_before = audit_ok(services.db)
    entered, release = threading.Event(), threading.Event()

    first = family_writes(services, client_id, "first")
    first.later(lambda s: (entered.set(), release.wait(10)))
    seen: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def commit(name: str, writes: DeferredWrites) -> None:
        try:
            commits.commit(writes)
            seen[name] = families(services.db)  # what is in the database when it returns
        except BaseException as exc:
            errors.append(exc)

    leader = threading.Thread(target=commit, args=("first", first))
    leader.start()
    assert entered.wait(10)
    others = [
        threading.Thread(target=commit, args=(f"r{i}", family_writes(services, client_id, f"r{i}")))
        for i in range(3)
    ]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 10
    while len(commits._pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(commits._pending) == 3, "the other requests did not queue behind the commit"
    assert families(services.db) == []  # nothing committed yet, nothing returned
    assert seen == {}
    release.set()
    for thread in (leader, *others):
        thread.join(10)
    assert errors == []
    assert (commits.transactions, commits.committed) == (2, 4)
    everything = ["first", "r0", "r1", "r2"]
    assert families(services.db) == everything
    assert seen["first"] == ["first"]
    for name in ("r0", "r1", "r2"):
        assert seen[name] == everything
    assert audit_ok(services.db) == events_before + 4
    # one head per transaction: the three grouped events are on one chain, one after the other
    with services.db.read_transaction() as s:
        chains = s.execute(
            select(AuditEvent.chain, func.count())
            .where(AuditEvent.tag == EventTag.TOKENS_ISSUED)
            .group_by(AuditEvent.chain)
        ).all()
    assert sorted(n for _, n in chains) in ([1, 3], [4])


def test_a_failing_request_in_a_group_fails_alone(services: Any, client_id: str) -> None:
    """A guard that no longer holds (a client disabled meanwhile) fails its own request, whose
    writes are all undone; the others of its group are committed."""
    commits = GroupCommit(services.db, around=audit.batch)
    tokens: Tokens = services.tokens
    events_before = audit_ok(services.db)
    entered, release = threading.Event(), threading.Event()
    first = family_writes(services, client_id, "first")
    first.later(lambda s: (entered.set(), release.wait(10)))

    bad = DeferredWrites()
    tokens.new_service_family(bad, client_id="nobody", secret_hash=None, scope="bad")
    bad.later(lambda s: audit.record(s, EventTag.TOKENS_ISSUED, chain=1, actor="client:nobody"))
    outcome: dict[str, BaseException | None] = {}
    callbacks: list[str] = []

    def commit(name: str, writes: DeferredWrites) -> None:
        writes.on_commit(lambda: callbacks.append(name))
        try:
            commits.commit(writes)
            outcome[name] = None
        except Exception as exc:
            outcome[name] = exc

    leader = threading.Thread(target=commit, args=("first", first))
    leader.start()
    assert entered.wait(10)
    group = [
        threading.Thread(target=commit, args=("good1", family_writes(services, client_id, "g1"))),
        threading.Thread(target=commit, args=("bad", bad)),
        threading.Thread(target=commit, args=("good2", family_writes(services, client_id, "g2"))),
    ]
    for thread in group:
        thread.start()
    deadline = time.monotonic() + 10
    while len(commits._pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    release.set()
    for thread in (leader, *group):
        thread.join(10)
    assert outcome["first"] is None and outcome["good1"] is None and outcome["good2"] is None
    assert isinstance(outcome["bad"], StaleRead)
    # the group was retried one by one: each committed request's callback ran once, the bad one's
    # never (the token metrics count this way)
    assert sorted(callbacks) == ["first", "good1", "good2"]
    assert families(services.db) == ["first", "g1", "g2"]
    assert audit_ok(services.db) == events_before + 3  # the bad one's event was undone too


def test_an_error_reaches_the_request_alone(services: Any, client_id: str) -> None:
    commits = GroupCommit(services.db)
    writes = DeferredWrites()
    writes.later(lambda s: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        commits.commit(writes)
    commits.commit(family_writes(services, client_id, "after"))  # the next one is not stuck
    assert families(services.db) == ["after"]


def test_concurrent_requests_all_committed(services: Any, client_id: str, db_kind: str) -> None:
    """Many threads at once (real concurrency on PostgreSQL and on SQLite's file): each request's
    writes are committed exactly once, and the audit chain stays whole."""
    commits = GroupCommit(services.db, around=audit.batch)
    events_before = audit_ok(services.db)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(15):
                commits.commit(family_writes(services, client_id, f"t{n}-{i:02d}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert families(services.db) == sorted(f"t{n}-{i:02d}" for n in range(8) for i in range(15))
    assert commits.committed == 120
    assert commits.transactions <= 120
    assert audit_ok(services.db) == events_before + 120


def test_an_interrupted_group_commit_never_answers_as_committed(
    services: Any, client_id: str
) -> None:
    """A worker stopping in the middle (an exception that is not an Exception): the request is
    told its writes failed, never that they were made."""
    commits = GroupCommit(services.db)
    writes = family_writes(services, client_id, "cut")

    def stop(session: Any) -> None:
        raise KeyboardInterrupt

    writes.later(stop)
    with pytest.raises((KeyboardInterrupt, InterruptedError)):
        commits.commit(writes)
    assert families(services.db) == []
    commits.commit(family_writes(services, client_id, "after"))
    assert families(services.db) == ["after"]
