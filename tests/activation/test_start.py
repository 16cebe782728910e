"""The first step tells nothing about which matricules have an open letter: not by its answer,
not by the work it does (every refusal writes and commits an audit event), and refusals are
counted per matricule in the limits' storage (SECURITY "Guessing and enumeration")."""

from __future__ import annotations

from datetime import date

from sqlalchemy import event, select

from authsvc import matricule
from authsvc.audit.models import AuditEvent

from .conftest import ANNE, JEAN

WRONG = "AAAA-BBBB-CCCC-DDDD"
UNKNOWN = matricule.make(date(1989, 12, 1), 57)


def from_ip(a, ip: str):  # type: ignore[no-untyped-def]
    """The browser ``a`` seen from another address (the per-IP limit is not what is tested)."""
    a.client.environ_base["REMOTE_ADDR"] = ip
    return a


def audit(db) -> list[tuple[str, str | None, dict]]:  # type: ignore[no-untyped-def, type-arg]
    with db.transaction() as s:
        rows = s.execute(
            select(AuditEvent.tag, AuditEvent.subject, AuditEvent.data).order_by(AuditEvent.seq)
        )
        return [(r.tag, r.subject, r.data) for r in rows]


def test_every_refusal_is_recorded_and_committed(activation, issue_letter, db, clock) -> None:  # type: ignore[no-untyped-def]
    anne = issue_letter(ANNE)
    jean_old = issue_letter(JEAN)
    issue_letter(JEAN)
    cases = {
        "unknown matricule": (anne.code, UNKNOWN, f"professional:{UNKNOWN}"),
        "malformed matricule": (anne.code, "12345", None),
        "a matricule without letter": (anne.code, matricule.make(date(1950, 1, 1), 1), None),
        "wrong code": (WRONG, ANNE, f"professional:{ANNE}"),
        "superseded letter": (jean_old.code, JEAN, f"professional:{JEAN}"),
        "another's code": (anne.code, JEAN, f"professional:{JEAN}"),
    }
    for name, (code, number, subject) in cases.items():
        before = len(audit(db))
        response = activation().start(code, number)
        assert response.json["error"] == "invalid_activation", name
        events = audit(db)[before:]
        assert len(events) == 1, (name, events)  # one event, whatever the refusal
        tag, recorded_subject, data = events[0]
        assert tag in ("activation:start:refused", "activation:code:wrong"), name
        if subject is not None:
            assert recorded_subject == subject, name
        dump = repr(data)
        assert code not in dump and code.replace("-", "") not in dump, name


def test_a_refusal_writes_as_a_wrong_code_does(activation, issue_letter, db) -> None:  # type: ignore[no-untyped-def]
    """The statements of a refused start: the same kinds of write, with or without a live letter
    (only a live letter's counter is one more UPDATE)."""
    issue_letter(ANNE)
    statements: list[str] = []

    def seen(_conn, _cursor, statement: str, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement.split()[0].upper())

    def writes(code: str, number: str) -> list[str]:
        statements.clear()
        event.listen(db.engine, "before_cursor_execute", seen)
        try:
            activation().start(code, number)
        finally:
            event.remove(db.engine, "before_cursor_execute", seen)
        return sorted(s for s in statements if s in ("INSERT", "UPDATE", "DELETE"))

    unknown = writes(WRONG, UNKNOWN)
    malformed = writes(WRONG, "12345")
    wrong = writes(WRONG, ANNE)
    assert "INSERT" in unknown  # the audit event
    assert unknown == malformed
    assert [s for s in wrong if s == "INSERT"] == [s for s in unknown if s == "INSERT"]


def test_refusals_are_counted_per_matricule_across_addresses(activation, issue_letter) -> None:  # type: ignore[no-untyped-def]
    """From ever new addresses (no per-IP limit applies), one matricule is slowed down after a
    few refusals — the same way for a matricule with an open letter as for an unknown one."""
    issue_letter(ANNE)
    answers: dict[str, list[int]] = {}
    for number in (ANNE, UNKNOWN):
        answers[number] = [
            from_ip(activation(), f"10.0.{i}.{len(answers)}").start(WRONG, number).status_code
            for i in range(8)
        ]
    assert answers[ANNE] == answers[UNKNOWN]
    assert answers[ANNE][:5] == [400] * 5
    assert 429 in answers[ANNE]
    limited = from_ip(activation(), "10.9.9.9").start(WRONG, UNKNOWN)
    assert limited.status_code == 429
    assert limited.json["error"] == "too_many_requests"
    assert int(limited.headers["Retry-After"]) >= 1
    # another matricule is not affected
    assert from_ip(activation(), "10.9.9.8").start(WRONG, JEAN).status_code == 400


def test_the_right_code_is_not_held_back_by_a_few_typos(activation, letter) -> None:  # type: ignore[no-untyped-def]
    for i in range(4):
        assert from_ip(activation(), f"10.1.0.{i}").start(WRONG, ANNE).status_code == 400
    assert activation().start(letter.code, ANNE).status_code == 201
