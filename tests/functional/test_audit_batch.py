"""Audit batches: several events appended with one lock of the chain head, the chain unchanged."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from authsvc.audit import service as audit
from authsvc.audit.models import AuditChainHead, AuditEvent
from authsvc.audit.tags import EventTag
from authsvc.db import Database


@pytest.fixture
def head_reads(db: Database) -> Iterator[list[str]]:
    """The statements that read (and lock) an audit chain head, as they are sent."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "audit_chain_heads" in statement:
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    yield seen
    event.remove(db.engine, "before_cursor_execute", before)


def chain_of(db: Database) -> list[tuple[int, str, str]]:
    with db.read_transaction() as s:
        return [
            (e.seq, e.tag, e.actor)
            for e in s.scalars(select(AuditEvent).order_by(AuditEvent.chain, AuditEvent.seq))
        ]


def verified(db: Database) -> audit.VerifyResult:
    with db.read_transaction() as s:
        return audit.verify(s)


def test_a_batch_locks_the_head_once_and_keeps_the_chain(
    db: Database, services: Any, head_reads: list[str]
) -> None:
    with db.transaction() as s:
        audit.record(s, EventTag.LETTER_ISSUED, actor="before")
    head_reads.clear()
    with db.transaction() as s, audit.batch(s):
        for i in range(3):
            event_ = audit.record(s, EventTag.LETTER_ISSUED, actor=f"in batch {i}", data={"i": i})
            assert event_.seq == 2 + i
            services.clock.advance(seconds=1)
    assert len(head_reads) == 1
    with db.transaction() as s:
        audit.record(s, EventTag.LETTER_ISSUED, actor="after")
    assert chain_of(db) == [
        (1, EventTag.LETTER_ISSUED, "before"),
        (2, EventTag.LETTER_ISSUED, "in batch 0"),
        (3, EventTag.LETTER_ISSUED, "in batch 1"),
        (4, EventTag.LETTER_ISSUED, "in batch 2"),
        (5, EventTag.LETTER_ISSUED, "after"),
    ]
    result = verified(db)
    assert result.ok, result.problems
    assert result.events == 5
    with db.read_transaction() as s:
        head = s.get(AuditChainHead, 0)
        last = s.scalars(select(AuditEvent).where(AuditEvent.seq == 5)).one()
        assert head is not None and (head.seq, head.hash) == (5, last.hash)


def test_events_in_a_batch_are_the_same_as_without(db: Database, services: Any) -> None:
    """Same links, same content: a batch changes only how often the head is read."""
    with db.transaction() as s:
        audit.record(s, EventTag.LETTER_ISSUED, actor="a", subject="professional:1", data={"x": 1})
        audit.record(s, EventTag.LETTER_ISSUED, actor="b", subject=None, data={"y": [1, "é"]})
    with db.read_transaction() as s:
        plain = [(e.seq, e.prev_hash, e.hash, e.data) for e in s.scalars(select(AuditEvent))]
    with db.transaction() as s, audit.batch(s):
        audit.record(s, EventTag.LETTER_ISSUED, actor="a", subject="professional:1", data={"x": 1})
        audit.record(s, EventTag.LETTER_ISSUED, actor="b", subject=None, data={"y": [1, "é"]})
    with db.read_transaction() as s:
        events = s.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert [(e.seq, e.data) for e in events[2:]] == [(3, {"x": 1}), (4, {"y": [1, "é"]})]
    assert events[2].prev_hash == plain[1][2]
    assert events[3].prev_hash == events[2].hash
    assert verified(db).ok


def test_a_batch_is_written_with_the_change_or_not_at_all(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as s, audit.batch(s):
        audit.record(s, EventTag.LETTER_ISSUED, actor="t1")
        audit.record(s, EventTag.LETTER_ISSUED, actor="t2")
        raise RuntimeError("the change failed")
    assert chain_of(db) == []
    with db.transaction() as s, audit.batch(s):
        audit.record(s, EventTag.LETTER_ISSUED, actor="t3")
    assert chain_of(db) == [(1, EventTag.LETTER_ISSUED, "t3")]
    assert verified(db).ok


def test_the_batch_ends_with_its_block(db: Database, head_reads: list[str]) -> None:
    with db.transaction() as s:
        with audit.batch(s):
            audit.record(s, EventTag.LETTER_ISSUED, actor="in")
            with audit.batch(s):  # nested: joins the outer batch
                audit.record(s, EventTag.LETTER_ISSUED, actor="nested")
            audit.record(s, EventTag.LETTER_ISSUED, actor="in again")
        assert len(head_reads) == 1
        audit.record(s, EventTag.LETTER_ISSUED, actor="out")  # reads the head again
        assert len(head_reads) == 2
    assert [a for _, _, a in chain_of(db)] == ["in", "nested", "in again", "out"]
    assert verified(db).ok


def test_a_savepoint_rolled_back_in_a_batch(db: Database) -> None:
    with db.transaction() as s, audit.batch(s):
        audit.record(s, EventTag.LETTER_ISSUED, actor="kept 1")
        savepoint = s.begin_nested()
        audit.record(s, EventTag.LETTER_ISSUED, actor="rolled back")
        savepoint.rollback()
        audit.record(s, EventTag.LETTER_ISSUED, actor="kept 2")
        with s.begin_nested():
            audit.record(s, EventTag.LETTER_ISSUED, actor="released")
        audit.record(s, EventTag.LETTER_ISSUED, actor="kept 3")
    assert [(q, a) for q, _, a in chain_of(db)] == [
        (1, "kept 1"),
        (2, "kept 2"),
        (3, "released"),
        (4, "kept 3"),
    ]
    assert verified(db).ok


def test_a_failed_append_is_not_remembered(db: Database) -> None:
    with db.transaction() as s, audit.batch(s):
        audit.record(s, EventTag.LETTER_ISSUED, actor="ok")
        with pytest.raises(ValueError, match="must not carry secrets"):
            audit.record(s, EventTag.LETTER_ISSUED, actor="t", data={"token": "x"})
        audit.record(s, EventTag.LETTER_ISSUED, actor="ok again")
    assert [a for _, _, a in chain_of(db)] == ["ok", "ok again"]
    assert verified(db).ok


@pytest.mark.postgresql_only
def test_concurrent_batches_keep_one_valid_chain(db: Database) -> None:
    threads, per_thread = 6, 15
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with db.transaction() as s, audit.batch(s):
                    audit.record(s, EventTag.LETTER_ISSUED, actor=f"t{n}", data={"i": i})
                    audit.record(s, EventTag.LETTER_ISSUED, actor=f"t{n}", data={"i": i, "n": 2})
                with db.transaction() as s:  # and writers without a batch, meanwhile
                    audit.record(s, EventTag.LETTER_ISSUED, actor=f"t{n}", data={"i": i, "n": 3})
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    result = verified(db)
    assert result.ok, result.problems
    assert result.events == threads * per_thread * 3
    # the two events of a batch are next to each other in the chain
    with db.read_transaction() as s:
        events = s.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    for e in events:
        if e.data.get("n") == 2:
            before = events[e.seq - 2]
            assert before.actor == e.actor and before.data == {"i": e.data["i"]}


def test_a_batch_over_two_transactions_locks_the_head_again(
    db: Database, head_reads: list[str]
) -> None:
    s = db.session()
    try:
        with audit.batch(s):
            audit.record(s, EventTag.LETTER_ISSUED, actor="first transaction")
            s.commit()  # the head's lock ends here
            with db.transaction() as other:
                audit.record(other, EventTag.LETTER_ISSUED, actor="another writer")
            audit.record(s, EventTag.LETTER_ISSUED, actor="second transaction")
            s.rollback()
            audit.record(s, EventTag.LETTER_ISSUED, actor="third transaction")
            s.commit()
    finally:
        s.close()
    assert len(head_reads) == 4
    assert [a for _, _, a in chain_of(db)] == [
        "first transaction",
        "another writer",
        "third transaction",
    ]
    assert verified(db).ok
