"""The audit trail: hash-chained, append-only, and `authsvc audit verify` names every tampered event."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from authsvc.audit import service as audit
from authsvc.audit.models import AuditEvent
from authsvc.audit.tags import EventTag
from authsvc.db import Database

from ..conftest import CLI


def record(db: Database, n: int, clock) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        with db.transaction() as s:
            audit.record(
                s,
                EventTag.LETTER_ISSUED,
                actor="test",
                subject=f"professional:{i}",
                data={"i": i, "name": "Léa"},
                clock=clock,
            )
            clock.advance(seconds=1)


@pytest.fixture
def trail(db: Database, services) -> Database:  # type: ignore[no-untyped-def]
    record(db, 5, services.clock)
    return db


@pytest.fixture
def tamper(trail: Database, db_kind: str) -> object:
    """Run raw SQL as an attacker with DDL rights would: drop the append-only triggers first."""

    def run(*statements: str) -> None:
        with trail.engine.begin() as conn:
            if db_kind == "postgresql":
                for table in ("audit_events", "audit_chain_heads"):
                    conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            else:
                names = conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger'"
                ).scalars()
                for name in list(names):
                    conn.exec_driver_sql(f"DROP TRIGGER {name}")
            for statement in statements:
                conn.execute(text(statement))
            if db_kind == "postgresql":
                for table in ("audit_events", "audit_chain_heads"):
                    conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER USER")

    return run


def ids(db: Database) -> list[int]:
    with db.transaction() as s:
        return list(s.scalars(select(AuditEvent.id).order_by(AuditEvent.seq)))


def test_untouched_trail_verifies(cli: CLI, trail: Database) -> None:
    result = cli("audit", "verify", "--json")
    assert result.exit_code == 0
    assert result.json["events"] == 5
    assert result.json["ok"] is True
    assert len(result.json["head"]) == 64
    human = cli("audit", "verify")
    assert human.stdout.startswith("audit trail ok: 5 events")


def test_empty_trail_verifies(cli: CLI) -> None:
    result = cli("audit", "verify", "--json")
    assert result.json["events"] == 0
    assert result.json["ok"] is True


def test_edited_event_is_named(cli: CLI, trail: Database, tamper) -> None:  # type: ignore[no-untyped-def]
    target = ids(trail)[2]
    tamper(f"UPDATE audit_events SET actor = 'somebody else' WHERE id = {target}")
    result = cli("audit", "verify", "--json")
    assert result.exit_code == 1
    assert result.json["ok"] is False
    assert result.json["problems"] == [
        {"event_id": target, "seq": 3, "problem": "edited: its content does not match its hash"}
    ]
    assert result.last_error_line.startswith("error: the audit trail fails verification")
    assert f"event {target} (seq 3): edited" in result.last_error_line


def test_edited_data_is_detected(cli: CLI, trail: Database, tamper) -> None:  # type: ignore[no-untyped-def]
    target = ids(trail)[0]
    tamper(f"""UPDATE audit_events SET data = '{{"i": 0, "name": "Lea"}}' WHERE id = {target}""")
    result = cli("audit", "verify", "--json")
    assert [p["event_id"] for p in result.json["problems"]] == [target]


def test_deleted_event_in_the_middle(cli: CLI, trail: Database, tamper) -> None:  # type: ignore[no-untyped-def]
    all_ids = ids(trail)
    tamper(f"DELETE FROM audit_events WHERE id = {all_ids[1]}")
    result = cli("audit", "verify", "--json")
    assert result.json["ok"] is False
    problem = result.json["problems"][0]
    assert problem["event_id"] == all_ids[2]
    assert "missing (deleted): seq 2..2" in problem["problem"]


def test_deleted_last_event(cli: CLI, trail: Database, tamper) -> None:  # type: ignore[no-untyped-def]
    tamper(f"DELETE FROM audit_events WHERE id = {ids(trail)[-1]}")
    result = cli("audit", "verify", "--json")
    assert result.json["problems"] == [
        {
            "event_id": None,
            "seq": 5,
            "problem": "the last 1 event(s) of chain 0 are missing (deleted)",
        }
    ]


def test_deleted_and_renumbered(cli: CLI, trail: Database, tamper) -> None:  # type: ignore[no-untyped-def]
    all_ids = ids(trail)
    tamper(
        f"DELETE FROM audit_events WHERE id = {all_ids[1]}",
        *(f"UPDATE audit_events SET seq = seq - 1 WHERE id = {i}" for i in all_ids[2:]),
        "UPDATE audit_chain_heads SET seq = 4",
    )
    result = cli("audit", "verify", "--json")
    assert result.json["ok"] is False
    assert result.json["problems"][0]["event_id"] == all_ids[2]
    assert "out of order" in result.json["problems"][0]["problem"]


def test_reordered_events(cli: CLI, trail: Database, tamper) -> None:  # type: ignore[no-untyped-def]
    a, b = ids(trail)[1:3]
    tamper(
        f"UPDATE audit_events SET seq = -1 WHERE id = {a}",
        f"UPDATE audit_events SET seq = 2 WHERE id = {b}",
        f"UPDATE audit_events SET seq = 3 WHERE id = {a}",
    )
    result = cli("audit", "verify", "--json")
    assert result.json["ok"] is False
    first = result.json["problems"][0]
    assert first["event_id"] == b
    assert first["problem"].startswith("out of order")


def test_the_database_refuses_updates_and_deletes(trail: Database) -> None:
    target = ids(trail)[0]
    with pytest.raises(DatabaseError, match="append-only"), trail.engine.begin() as conn:
        conn.execute(text(f"UPDATE audit_events SET actor = 'x' WHERE id = {target}"))
    with pytest.raises(DatabaseError, match="append-only"), trail.engine.begin() as conn:
        conn.execute(text(f"DELETE FROM audit_events WHERE id = {target}"))
    with pytest.raises(DatabaseError, match="append-only"), trail.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_chain_heads"))


def test_the_database_refuses_moving_the_head(trail: Database) -> None:
    for statement in (
        "UPDATE audit_chain_heads SET seq = 0, hash = '" + "0" * 64 + "'",
        "UPDATE audit_chain_heads SET seq = seq + 1",
        "UPDATE audit_chain_heads SET seq = 3",
    ):
        with pytest.raises(DatabaseError, match="only advances"), trail.engine.begin() as conn:
            conn.execute(text(statement))


def test_the_database_refuses_events_out_of_place(trail: Database, db_kind: str) -> None:
    """Appending anywhere but after the head, or replacing an event (SQLite's INSERT OR REPLACE
    removes the old row without firing DELETE triggers), is refused."""
    with trail.engine.connect() as conn:
        first = (
            conn.execute(text("SELECT * FROM audit_events ORDER BY seq LIMIT 1")).mappings().one()
        )
    row = dict(first)
    row["actor"] = "forger"
    row["data"] = json.dumps(row["data"]) if not isinstance(row["data"], str) else row["data"]
    columns = ", ".join(row)
    values = ", ".join(f":{c}" for c in row)
    verb = "INSERT OR REPLACE" if db_kind == "sqlite" else "INSERT"
    with pytest.raises(DatabaseError), trail.engine.begin() as conn:
        conn.execute(text(f"{verb} INTO audit_events ({columns}) VALUES ({values})"), row)
    row.pop("id")
    row["seq"] = 99
    with pytest.raises(DatabaseError, match="right after the head"), trail.engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO audit_events ({', '.join(row)}) VALUES ({', '.join(':' + c for c in row)})"
            ),
            row,
        )


@pytest.mark.postgresql_only
def test_the_database_refuses_truncate(trail: Database) -> None:
    for table in ("audit_events", "audit_chain_heads"):
        with pytest.raises(DatabaseError, match="append-only"), trail.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {table} CASCADE"))


def test_a_forged_append_without_the_key_is_detected(cli: CLI, trail: Database) -> None:
    """Someone with write access to the database but not the instance secret appends an event
    where the database allows it: its HMAC cannot be right."""
    with trail.engine.begin() as conn:
        head = conn.execute(text("SELECT seq, hash FROM audit_chain_heads WHERE chain = 0")).one()
        last = (
            conn.execute(
                text("SELECT * FROM audit_events WHERE chain = 0 ORDER BY seq DESC LIMIT 1")
            )
            .mappings()
            .one()
        )
        forged = {k: v for k, v in dict(last).items() if k != "id"}
        forged.update(seq=head.seq + 1, prev_hash=head.hash, actor="forger", hash="f" * 64)
        if not isinstance(forged["data"], str):
            forged["data"] = json.dumps(forged["data"])
        conn.execute(
            text(
                f"INSERT INTO audit_events ({', '.join(forged)}) VALUES ({', '.join(':' + c for c in forged)})"
            ),
            forged,
        )
        conn.execute(
            text("UPDATE audit_chain_heads SET seq = seq + 1, hash = :h WHERE chain = 0"),
            {"h": "f" * 64},
        )
    result = cli("audit", "verify", "--json")
    assert result.exit_code == 1
    assert result.json["problems"][0]["seq"] == 6
    assert "edited" in result.json["problems"][0]["problem"]


def test_the_triggers_are_in_place_at_head(db: Database, db_kind: str) -> None:
    with db.engine.connect() as conn:
        if db_kind == "sqlite":
            names = set(
                conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger'"
                ).scalars()
            )
        else:
            names = set(
                conn.exec_driver_sql(
                    "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
                ).scalars()
            )
    expected = {"audit_events_in_order", "audit_heads_advance", "audit_heads_kept"}
    expected |= (
        {"audit_events_no_update", "audit_events_no_delete"}
        if db_kind == "sqlite"
        else {"audit_events_append_only", "audit_events_no_truncate", "audit_heads_no_truncate"}
    )
    assert expected <= names


def test_key_rotation_keeps_older_events_verifiable(trail: Database, settings, clock) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from authsvc.app import Services

    rotated = dataclasses.replace(settings, secret_key=b"n" * 40)
    without = Services.from_settings(rotated, clock=clock)
    with without.db.read_transaction() as s:
        result = audit.verify(s)
    assert not result.ok
    assert "unknown key" in result.problems[0].problem
    with_fallback = Services.from_settings(
        dataclasses.replace(rotated, secret_key_fallbacks=(settings.secret_key,)), clock=clock
    )
    with with_fallback.db.transaction() as s:
        audit.record(s, EventTag.LETTER_ISSUED, actor="after rotation", clock=clock)
    with with_fallback.db.read_transaction() as s:
        assert audit.verify(s).ok
    without.close()
    with_fallback.close()


def test_secrets_are_refused_in_event_data(db: Database) -> None:
    with pytest.raises(ValueError, match="must not carry secrets"), db.transaction() as s:
        audit.record(s, EventTag.LETTER_ISSUED, actor="t", data={"nested": {"Password": "x"}})


def test_event_is_written_with_the_change_or_not_at_all(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as s:
        audit.record(s, EventTag.LETTER_ISSUED, actor="t")
        raise RuntimeError("the change failed")
    with db.transaction() as s:
        assert s.scalars(select(AuditEvent)).all() == []
        assert audit.verify(s).ok


@pytest.mark.postgresql_only
def test_concurrent_writers_keep_one_valid_chain(db: Database, services) -> None:  # type: ignore[no-untyped-def]
    threads, per_thread = 8, 25
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with db.transaction() as s:
                    audit.record(s, EventTag.LETTER_ISSUED, actor=f"t{n}", data={"i": i})
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    with db.read_transaction() as s:
        result = audit.verify(s)
    assert result.ok, result.problems
    assert result.events == threads * per_thread


@pytest.mark.postgresql_only
def test_verify_while_events_are_appended(db: Database) -> None:
    """A verification running alongside writers sees one consistent snapshot: never a false alarm."""
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            with db.transaction() as s:
                audit.record(s, EventTag.LETTER_ISSUED, actor="writer")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(20):
            with db.read_transaction() as s:
                result = audit.verify(s)
            assert result.ok, result.problems
    finally:
        stop.set()
        writer.join()


def test_token_events_spread_over_chains_and_each_chain_is_checked(  # type: ignore[no-untyped-def]
    cli: CLI, trail: Database, services, tamper
) -> None:
    """Issued tokens go to chains 1-7 (one head lock each, not one for every token); the trail
    verifies across all chains, and a chain removed whole — head and events — is noticed."""
    before = cli("audit", "verify", "--json").json
    assert len(before["heads"]) == len(audit.CHAINS)
    with trail.transaction() as s:
        for _ in range(40):
            audit.record(
                s,
                EventTag.TOKENS_ISSUED,
                chain=audit.token_chain(),
                actor="client:x",
                clock=services.clock,
            )
    with trail.transaction() as s:
        used = set(s.scalars(select(AuditEvent.chain).distinct()))
    assert 0 in used and len(used - {0}) > 1 and used <= set(audit.CHAINS)
    assert cli("audit", "verify", "--json").json == {
        **cli("audit", "verify", "--json").json,
        "ok": True,
        "events": 45,
    }
    after = cli("audit", "verify", "--json").json
    # the published head covers every chain: a token event changes it, chain 0 unchanged or not
    assert after["head"] != before["head"]
    assert {c for c in after["heads"] if after["heads"][c] != before["heads"][c]} == {
        str(c) for c in used - {0}
    }
    victim = min(used - {0})
    tamper(
        f"DELETE FROM audit_events WHERE chain = {victim}",
        f"DELETE FROM audit_chain_heads WHERE chain = {victim}",
    )
    result = cli("audit", "verify", "--json")
    assert result.exit_code == 1
    assert any(f"chain {victim} has no head" in p["problem"] for p in result.json["problems"])
