"""Activation letters: strong codes in groups, kept only as keyed hashes, 90 days, superseded."""

from __future__ import annotations

import logging
import re
import threading
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from authsvc import matricule
from authsvc.accounts.models import Account, AccountStatus
from authsvc.activation import letters
from authsvc.activation.models import ActivationLetter, LetterState
from authsvc.db import Base, Database
from authsvc.errors import InvalidInput, NotFound
from authsvc.security.secrets import CODE_ALPHABET

from ..conftest import CLI, log_text

M1 = matricule.make(date(1970, 5, 17), 1)
M2 = matricule.make(date(1981, 2, 3), 42)
CODE_RE = re.compile(
    r"^[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}(-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}){3}$"
)


@pytest.fixture
def directory(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "hpd.csv"
    path.write_text(
        "matricule,given_name,family_name,profession,provider_code\n"
        f"{M1},Anne,Muller,doctor,123456-78\n{M2},Jean,Schmit,nurse,234567-89\n"
    )
    assert cli("directory", "import", str(path)).exit_code == 0


def dump_database(db: Database) -> str:
    """Every value of every table, as text: where a secret must not be found."""
    out = []
    with db.transaction() as s:
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)):
                out.append(repr(tuple(row)))
    return "\n".join(out)


def test_alphabet_has_no_look_alikes() -> None:
    assert not set("01OIL") & set(CODE_ALPHABET)
    assert len(set(CODE_ALPHABET)) == len(CODE_ALPHABET) == 31
    assert letters.CODE_BITS >= 60


def test_issue_from_the_cli(
    cli: CLI, directory: None, db: Database, services, authsvc_log: list[logging.LogRecord]
) -> None:
    result = cli("letters", "issue", M1, "--json")
    assert result.exit_code == 0, result.stderr
    out = result.json
    assert set(out) == {"letter_id", "activation_code", "expires_at"}
    code = out["activation_code"]
    assert CODE_RE.match(code)
    with db.transaction() as s:
        letter = s.get(ActivationLetter, __import__("uuid").UUID(out["letter_id"]))
        assert letter is not None
        assert letter.expires_at - letter.issued_at == timedelta(days=90)
        assert out["expires_at"] == letter.expires_at.isoformat(timespec="seconds").replace(
            "+00:00", "Z"
        )
        # the code verifies against its hash, typed in any case, with or without separators
        assert letters.code_matches(letter, code, services.hasher)
        assert letters.code_matches(letter, code.lower().replace("-", " "), services.hasher)
        assert not letters.code_matches(
            letter, code[:-1] + ("2" if code[-1] != "2" else "3"), services.hasher
        )
        account = s.scalars(select(Account)).one()
        assert account.status == AccountStatus.PENDING
        assert M1 not in account.subject
    # never in clear in the database, nor in the logs (which do speak of the letter), nor on stderr
    assert any(out["letter_id"] in r.getMessage() for r in authsvc_log)
    bare = code.replace("-", "")
    dump = dump_database(db)
    for form in (code, bare, bare.lower()):
        assert form not in dump
        assert form not in log_text(authsvc_log)
        assert form not in result.stderr


def test_human_output_prints_the_code_in_groups(cli: CLI, directory: None) -> None:
    result = cli("letters", "issue", M1)
    assert result.exit_code == 0
    assert re.search(
        r"activation code: [A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}\n", result.stdout
    )
    assert "Anne Muller" in result.stdout


def test_a_new_letter_supersedes_the_unused_one(directory: None, db: Database, services) -> None:
    with db.transaction() as s:
        first = letters.issue(s, M1, hasher=services.hasher, actor="t", clock=services.clock)
    with db.transaction() as s:
        second = letters.issue(s, M1, hasher=services.hasher, actor="t", clock=services.clock)
    assert first.activation_code != second.activation_code
    now = services.clock.now()
    with db.transaction() as s:
        rows = {str(x.id): x for x in s.scalars(select(ActivationLetter))}
        assert rows[first.letter_id].state(now) is LetterState.SUPERSEDED
        assert rows[second.letter_id].state(now) is LetterState.ISSUED
        # one account per professional, however many letters
        assert len(s.scalars(select(Account)).all()) == 1


def test_letter_states(directory: None, db: Database, services) -> None:
    with db.transaction() as s:
        issued = letters.issue(s, M1, hasher=services.hasher, actor="t", clock=services.clock)
    with db.transaction() as s:
        letter = s.scalars(select(ActivationLetter)).one()
        now = services.clock.now()
        assert letter.is_usable(now)
        assert letter.state(letter.expires_at) is LetterState.EXPIRED
        letter.failed_attempts = 5
        assert letter.state(now) is LetterState.LOCKED
    assert issued.expires_at == letter.expires_at


@pytest.mark.parametrize(
    ("number", "error", "message"),
    [
        ("123", InvalidInput, "invalid matricule"),
        (matricule.make(date(1999, 9, 9), 9), NotFound, "no professional"),
    ],
)
def test_refused(directory: None, db: Database, services, number: str, error, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message), db.transaction() as s:
        letters.issue(s, number, hasher=services.hasher, actor="t")


def test_cli_error_for_unknown_professional(cli: CLI, directory: None) -> None:
    result = cli("letters", "issue", matricule.make(date(1999, 9, 9), 9))
    assert result.exit_code == 1
    assert result.last_error_line.startswith("error: no professional with matricule")


def test_no_letter_for_a_professional_who_left(cli: CLI, directory: None, tmp_path: Path) -> None:
    path = tmp_path / "full.csv"
    path.write_text(
        "matricule,given_name,family_name,profession,provider_code\n"
        f"{M2},Jean,Schmit,nurse,234567-89\n"
    )
    cli("directory", "import", str(path), "--full")
    result = cli("letters", "issue", M1)
    assert result.exit_code == 1
    assert "has left the directory" in result.last_error_line


def test_database_refuses_two_open_letters(directory: None, db: Database, services) -> None:
    with db.transaction() as s:
        letters.issue(s, M1, hasher=services.hasher, actor="t", clock=services.clock)
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), db.transaction() as s:
        letter = s.scalars(select(ActivationLetter)).one()
        s.add(
            ActivationLetter(
                professional_id=letter.professional_id,
                code_hash="0" * 64,
                issued_at=letter.issued_at,
                expires_at=letter.expires_at,
                failed_attempts=0,
                issued_by="t",
            )
        )


@pytest.mark.postgresql_only
def test_concurrent_issues_leave_exactly_one_open_letter(
    directory: None, db: Database, services
) -> None:
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def issue() -> None:
        try:
            barrier.wait()
            with db.transaction() as s:
                letters.issue(s, M1, hasher=services.hasher, actor="t")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=issue) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.transaction() as s:
        open_letters = s.execute(
            text(
                "SELECT count(*) FROM activation_letters WHERE used_at IS NULL AND superseded_at IS NULL"
            )
        ).scalar()
        total = s.execute(text("SELECT count(*) FROM activation_letters")).scalar()
        accounts = s.execute(text("SELECT count(*) FROM accounts")).scalar()
    assert (open_letters, total, accounts) == (1, 8, 1)


def test_a_code_that_cannot_be_printed_issues_no_letter(
    env: dict[str, str], directory: None, db: Database
) -> None:
    """`authsvc letters issue M > /dev/full`: the code is lost, so the letter must not exist."""
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("authsvc"))
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [exe, "letters", "issue", M1, "--json"],
            env={**os.environ, **env},
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1].startswith("error: cannot write the letter's code")
    )
    with db.transaction() as s:
        assert s.scalars(select(ActivationLetter)).all() == []
