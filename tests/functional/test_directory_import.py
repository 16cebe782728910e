"""``authsvc directory import``: good rows in, bad rows reported by line, broken files refused whole."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from authsvc import matricule
from authsvc.accounts.models import Account, AccountStatus
from authsvc.activation import letters
from authsvc.audit.models import AuditEvent
from authsvc.audit.service import verify
from authsvc.audit.tags import EventTag
from authsvc.db import Database
from authsvc.directory.importer import ImportFileError, import_directory
from authsvc.directory.models import DirectoryStatus, Professional

from ..conftest import CLI

HEADER = "matricule,given_name,family_name,profession,provider_code\n"
M1 = matricule.make(date(1970, 5, 17), 1)
M2 = matricule.make(date(1981, 2, 3), 42)
M3 = matricule.make(date(1990, 12, 31), 999)


def write(tmp_path: Path, text: str | bytes, name: str = "hpd.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def count(db: Database) -> int:
    with db.transaction() as s:
        return s.scalar(select(func.count()).select_from(Professional)) or 0


def test_good_and_bad_rows(cli: CLI, db: Database, tmp_path: Path) -> None:
    bad_check = M2[:-1] + str((int(M2[-1]) + 1) % 10)
    path = write(
        tmp_path,
        HEADER
        + f"{M1},Anne,Muller,doctor,123456-78\n"
        + f"{bad_check},Bad,Check,nurse,1\n"
        + f"{M3},,Nogiven,nurse,2\n"
        + "\n"  # blank lines are not rows, but count as lines
        + f"{M2},Jean,Schmit,dentist,234567-89\n"
        + f"{M2},Jean,Again,dentist,234567-89\n"
        + "2023023100000,Bad,Date,nurse,3\n"
        + f"{M3},Too,Few\n"
        + f'{M3},"Léa ""Lou""",Weber,"physio, sport",345678-90\n',
    )
    result = cli("directory", "import", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json == {
        "imported": 3,
        "updated": 0,
        "left": 0,
        "rejected": [
            {"line": 3, "error": "invalid matricule: the 13th digit (Verhoeff check) is wrong"},
            {"line": 4, "error": "missing given_name"},
            {"line": 7, "error": "matricule repeated (first on line 6)"},
            {
                "line": 8,
                "error": "invalid matricule: the first 8 digits of a matricule are a date "
                "(YYYYMMDD)",
            },
            {"line": 9, "error": "expected 5 fields, got 3"},
        ],
    }
    with db.transaction() as s:
        lea = s.scalars(select(Professional).where(Professional.matricule == M3)).one()
        assert lea.given_name == 'Léa "Lou"'
        assert lea.profession == "physio, sport"


def test_multiline_field_keeps_line_numbers_right(cli: CLI, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER + f'{M1},"Anne\nMarie",Muller,doctor,1\n' + "123,Bad,Row,nurse,2\n",
    )
    result = cli("directory", "import", str(path), "--json")
    assert result.json["rejected"] == [
        {"line": 2, "error": "control characters in a field"},
        {"line": 4, "error": "invalid matricule: a matricule has exactly 13 digits"},
    ]


def test_reimport_updates_changed_rows_only(cli: CLI, tmp_path: Path) -> None:
    first = HEADER + f"{M1},Anne,Muller,doctor,1\n{M2},Jean,Schmit,dentist,2\n"
    cli("directory", "import", str(write(tmp_path, first)))
    second = HEADER + f"{M1},Anne,Muller-Weber,doctor,1\n{M2},Jean,Schmit,dentist,2\n"
    result = cli("directory", "import", str(write(tmp_path, second, "2.csv")), "--json")
    assert result.json == {"imported": 0, "updated": 1, "left": 0, "rejected": []}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"matricule,given_name,family_name,profession\n", "header must be"),
        (b"matricule;given_name;family_name;profession;provider_code\n", "header must be"),
        (
            (
                "matricule,given_name,family_name,profession,provider_code\n"
                + f"{M1},Ren\xe9,X,doctor,1\n"
            ).encode("latin-1"),
            "not UTF-8 (invalid byte on line 2)",
        ),
        (b"\xff\xfe" + b"m\x00", "not UTF-8"),
    ],
)
def test_broken_files_are_refused_whole(
    cli: CLI, db: Database, tmp_path: Path, content: bytes, message: str
) -> None:
    result = cli("directory", "import", str(write(tmp_path, content)), "--json")
    assert result.exit_code != 0
    assert result.last_error_line.startswith("error: ")
    assert message in result.last_error_line
    assert result.json["error"] == "invalid_request"
    assert "Traceback" not in result.stderr
    assert count(db) == 0


def test_utf8_bom_and_crlf_are_accepted(cli: CLI, db: Database, tmp_path: Path) -> None:
    content = ("\ufeff" + HEADER + f"{M1},Anne,Muller,doctor,1\n").replace("\n", "\r\n")
    result = cli("directory", "import", str(write(tmp_path, content.encode("utf-8"))), "--json")
    assert result.json["imported"] == 1
    assert count(db) == 1


def test_missing_file(cli: CLI, tmp_path: Path) -> None:
    result = cli("directory", "import", str(tmp_path / "nope.csv"))
    assert result.exit_code != 0
    assert result.last_error_line.startswith("error: cannot read")


def test_full_import_marks_absent_professionals_as_left_and_suspends_their_accounts(
    cli: CLI, services, db: Database, tmp_path: Path
) -> None:
    cli(
        "directory",
        "import",
        str(write(tmp_path, HEADER + f"{M1},A,B,doctor,1\n{M2},C,D,nurse,2\n")),
    )
    with db.transaction() as s:
        letters.issue(s, M2, hasher=services.hasher, actor="test", clock=services.clock)
    # A partial import never marks anyone as left.
    partial = cli(
        "directory",
        "import",
        str(write(tmp_path, HEADER + f"{M1},A,B,doctor,1\n", "p.csv")),
        "--json",
    )
    assert partial.json["left"] == 0
    full = cli(
        "directory",
        "import",
        str(write(tmp_path, HEADER + f"{M1},A,B,doctor,1\n", "f.csv")),
        "--full",
        "--json",
    )
    assert full.json == {"imported": 0, "updated": 0, "left": 1, "rejected": []}
    with db.transaction() as s:
        p2 = s.scalars(select(Professional).where(Professional.matricule == M2)).one()
        assert p2.status == DirectoryStatus.LEFT
        assert p2.left_at is not None
        account = s.scalars(select(Account).where(Account.professional_id == p2.id)).one()
        assert account.status == AccountStatus.SUSPENDED
        tags = s.scalars(select(AuditEvent.tag).order_by(AuditEvent.seq)).all()
        assert EventTag.DIRECTORY_LEFT in tags
        assert EventTag.ACCOUNT_SUSPENDED in tags
        assert verify(s).ok
    # Listed again: back in the directory, the account stays suspended until re-activated.
    back = cli(
        "directory",
        "import",
        str(write(tmp_path, HEADER + f"{M1},A,B,doctor,1\n{M2},C,D,nurse,2\n", "b.csv")),
        "--full",
        "--json",
    )
    assert back.json == {"imported": 0, "updated": 1, "left": 0, "rejected": []}
    with db.transaction() as s:
        p2 = s.scalars(select(Professional).where(Professional.matricule == M2)).one()
        assert p2.status == DirectoryStatus.LISTED
        account = s.scalars(select(Account).where(Account.professional_id == p2.id)).one()
        assert account.status == AccountStatus.SUSPENDED


def test_import_is_one_transaction(services, db: Database) -> None:
    """A failure after the rows are written leaves nothing behind (the hooks run inside)."""
    data = (HEADER + f"{M1},A,B,doctor,1\n").encode()
    with db.transaction() as s:
        import_directory(s, data, actor="test", clock=services.clock)
    data2 = (HEADER + f"{M2},C,D,nurse,2\n").encode()

    def explode(session, account):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    with db.transaction() as s:
        letters.issue(s, M1, hasher=services.hasher, actor="test", clock=services.clock)
    with pytest.raises(RuntimeError), db.transaction() as s:
        import_directory(s, data2, full=True, actor="test", on_suspend=[explode])
    assert count(db) == 1
    with db.transaction() as s:
        assert s.scalars(select(Professional.status)).all() == ["listed"]


def test_parse_errors_are_import_file_errors() -> None:
    from authsvc.directory.importer import decode, parse

    with pytest.raises(ImportFileError):
        parse(decode(b"a,b\n"))


def test_full_import_with_rejected_rows_marks_no_one_as_left(
    cli: CLI, db: Database, tmp_path: Path
) -> None:
    cli(
        "directory",
        "import",
        str(write(tmp_path, HEADER + f"{M1},A,B,doctor,1\n{M2},C,D,nurse,2\n")),
    )
    # M2's row has a stray quote: it is rejected, and M2 must not be taken for a departure
    broken = HEADER + f'{M1},A,B,doctor,1\n{M2},"C,D,nurse,2\n'
    result = cli(
        "directory", "import", str(write(tmp_path, broken, "broken.csv")), "--full", "--json"
    )
    assert result.exit_code == 0
    assert result.json["left"] == 0
    assert "rejected" in result.json["departures_skipped"]
    assert "warning: no one marked as left" in result.stderr
    with db.transaction() as s:
        assert set(s.scalars(select(Professional.status))) == {"listed"}
    forced = cli(
        "directory", "import", str(write(tmp_path, broken, "b2.csv")), "--full", "--force", "--json"
    )
    assert forced.json["left"] == 1


def test_full_import_refuses_a_mass_departure_without_force(
    cli: CLI, db: Database, tmp_path: Path
) -> None:
    everyone = [
        matricule.make(date(1960, 1, 1) + __import__("datetime").timedelta(days=i), i)
        for i in range(40)
    ]
    rows = "".join(f"{m},G{i},F{i},nurse,{i}\n" for i, m in enumerate(everyone))
    cli("directory", "import", str(write(tmp_path, HEADER + rows)))
    truncated = HEADER + "".join(f"{m},G{i},F{i},nurse,{i}\n" for i, m in enumerate(everyone[:20]))
    result = cli(
        "directory", "import", str(write(tmp_path, truncated, "t.csv")), "--full", "--json"
    )
    assert result.json["left"] == 0
    assert "20 of 40 listed professionals would leave" in result.json["departures_skipped"]
    header_only = cli(
        "directory", "import", str(write(tmp_path, HEADER, "h.csv")), "--full", "--json"
    )
    assert header_only.json["left"] == 0
    forced = cli(
        "directory",
        "import",
        str(write(tmp_path, truncated, "t2.csv")),
        "--full",
        "--force",
        "--json",
    )
    assert forced.json["left"] == 20
