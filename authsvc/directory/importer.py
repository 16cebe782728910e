"""Importing the agency's directory file (INTERFACE §2 ``authsvc directory import``).

The file is CSV, UTF-8, with the header
``matricule,given_name,family_name,profession,provider_code``.
A file is imported in one transaction: rows that are wrong (invalid matricule, missing field, wrong
number of fields, a matricule repeated) are reported with their line number (the header is line 1)
and skipped, the others upserted. A file that cannot be read as such (not UTF-8, empty, wrong
header) is refused whole and nothing is imported.

With ``full=True`` the file is the whole directory: professionals listed before and absent from it
are marked as *left* and their accounts suspended (PRODUCT "Rules the agency states"). Because a
departure suspends an account, it never comes from a doubtful file: when any row was rejected, or
when more than :data:`MASS_DEPARTURE` of the listed professionals would leave at once, the rows are
imported but no one is marked as left (``departures_skipped`` says why), unless ``force=True``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from .. import matricule as matricules
from ..accounts.models import Account, AccountStatus
from ..audit import service as audit
from ..audit.tags import EventTag
from ..clock import Clock, system_clock
from ..errors import InvalidInput
from .models import DirectoryStatus, Professional

HEADER = ("matricule", "given_name", "family_name", "profession", "provider_code")
MAX_LENGTHS = {
    "given_name": 200,
    "family_name": 200,
    "profession": 100,
    "provider_code": 32,
}
BATCH = 5000
#: a --full import that would mark more than this share of the listed professionals as left (and
#: more than MASS_DEPARTURE_MIN of them) is presumed to be a truncated or wrong file
MASS_DEPARTURE = 0.05
MASS_DEPARTURE_MIN = 10


class ImportFileError(InvalidInput):
    """The file as a whole cannot be imported; nothing was."""


@dataclass
class Rejected:
    line: int
    error: str


@dataclass
class ImportResult:
    imported: int = 0
    updated: int = 0
    left: int = 0
    unchanged: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    suspended_accounts: list[str] = field(default_factory=list)
    #: why a --full import marked no one as left, if it did not
    departures_skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "imported": self.imported,
            "updated": self.updated,
            "left": self.left,
            "rejected": [{"line": r.line, "error": r.error} for r in self.rejected],
        }
        if self.departures_skipped:
            result["departures_skipped"] = self.departures_skipped
        return result


@dataclass(frozen=True)
class Row:
    line: int
    matricule: str
    given_name: str
    family_name: str
    profession: str
    provider_code: str

    def fields(self) -> dict[str, str]:
        return {
            "given_name": self.given_name,
            "family_name": self.family_name,
            "profession": self.profession,
            "provider_code": self.provider_code,
        }


def decode(data: bytes, *, name: str = "the file") -> str:
    if not data.strip():
        raise ImportFileError(f"{name} is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFileError(f"{name} is not UTF-8 (invalid byte on line {line})") from None


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def parse(text: str) -> tuple[list[Row], list[Rejected]]:
    """Parse and check every row; raise :class:`ImportFileError` for a file-level problem."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    if header is None:
        raise ImportFileError("the file is empty")
    if tuple(h.strip() for h in header) != HEADER:
        raise ImportFileError(
            f"line 1: the header must be {','.join(HEADER)} (got {','.join(header)[:200]})"
        )
    rows: list[Row] = []
    rejected: list[Rejected] = []
    seen: dict[str, int] = {}
    line = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rejected.append(Rejected(line, f"malformed CSV: {exc}"))
            line = reader.line_num + 1
            continue
        start, line = line, reader.line_num + 1
        if not record or all(not value.strip() for value in record):
            continue  # blank lines are not rows
        if len(record) != len(HEADER):
            rejected.append(Rejected(start, f"expected {len(HEADER)} fields, got {len(record)}"))
            continue
        values = dict(zip(HEADER, (value.strip() for value in record), strict=True))
        missing = [name for name in HEADER if not values[name]]
        if missing:
            rejected.append(Rejected(start, f"missing {', '.join(missing)}"))
            continue
        try:
            number = matricules.validate(values["matricule"])
        except matricules.InvalidMatricule as exc:
            rejected.append(Rejected(start, f"invalid matricule: {exc}"))
            continue
        too_long = [name for name, limit in MAX_LENGTHS.items() if len(values[name]) > limit]
        if too_long:
            rejected.append(Rejected(start, f"too long: {', '.join(too_long)}"))
            continue
        if any(_CONTROL.search(values[name]) for name in MAX_LENGTHS):
            rejected.append(Rejected(start, "control characters in a field"))
            continue
        if number in seen:
            rejected.append(Rejected(start, f"matricule repeated (first on line {seen[number]})"))
            continue
        seen[number] = start
        rows.append(
            Row(
                start,
                number,
                values["given_name"],
                values["family_name"],
                values["profession"],
                values["provider_code"],
            )
        )
    return rows, rejected


def _chunks(items: list[Any], size: int = BATCH) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


#: Called, inside the transaction, for every account suspended because its professional left;
#: later parts of authsvc (sessions, tokens) register their own effects here.
SuspensionHook = Callable[[Session, Account], None]


def import_directory(
    session: Session,
    data: bytes,
    *,
    full: bool = False,
    force: bool = False,
    actor: str,
    source: str = "file",
    clock: Clock = system_clock,
    on_suspend: Iterable[SuspensionHook] = (),
) -> ImportResult:
    """Import a directory file inside the caller's transaction."""
    rows, rejected = parse(decode(data))
    now = clock.now()
    result = ImportResult(rejected=rejected)

    existing = {
        p.matricule: p
        for p in session.execute(
            select(
                Professional.id,
                Professional.matricule,
                Professional.given_name,
                Professional.family_name,
                Professional.profession,
                Professional.provider_code,
                Professional.status,
            )
        )
    }

    new_rows: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    returned: list[str] = []
    for row in rows:
        before = existing.get(row.matricule)
        if before is None:
            new_rows.append(
                {
                    "matricule": row.matricule,
                    **row.fields(),
                    "status": DirectoryStatus.LISTED.value,
                    "left_at": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            continue
        came_back = before.status != DirectoryStatus.LISTED
        same = all(getattr(before, k) == v for k, v in row.fields().items())
        if same and not came_back:
            result.unchanged += 1
            continue
        changed.append({"b_id": before.id, **row.fields()})
        if came_back:
            returned.append(row.matricule)

    for chunk in _chunks(new_rows):
        session.execute(insert(Professional), chunk)
    if changed:
        stmt = (
            update(Professional)
            .where(Professional.id == bindparam("b_id"))
            .values(
                given_name=bindparam("given_name"),
                family_name=bindparam("family_name"),
                profession=bindparam("profession"),
                provider_code=bindparam("provider_code"),
                status=DirectoryStatus.LISTED.value,
                left_at=None,
                updated_at=now,
            )
        )
        for chunk in _chunks(changed):
            session.connection().execute(stmt, chunk)
    result.imported = len(new_rows)
    result.updated = len(changed)

    if full:
        listed = {row.matricule for row in rows}
        listed_before = sum(1 for p in existing.values() if p.status == DirectoryStatus.LISTED)
        gone = [
            p for m, p in existing.items() if m not in listed and p.status == DirectoryStatus.LISTED
        ]
        if gone and rejected and not force:
            result.departures_skipped = (
                f"{len(rejected)} row(s) were rejected: a --full import with rejected rows marks "
                f"no one as left ({len(gone)} would have left); fix the file and import it again"
            )
        elif (
            gone
            and not force
            and len(gone) > max(MASS_DEPARTURE_MIN, MASS_DEPARTURE * listed_before)
        ):
            result.departures_skipped = (
                f"{len(gone)} of {listed_before} listed professionals would leave at once: "
                "this looks like a truncated or wrong file; check it, then use --force if right"
            )
        elif gone:
            _mark_left(session, gone, result, actor=actor, clock=clock, on_suspend=on_suspend)

    for number in returned:
        audit.record(
            session,
            EventTag.DIRECTORY_RETURNED,
            actor=actor,
            subject=f"professional:{number}",
            data={"note": "listed again; the account stays suspended until re-activated"},
            clock=clock,
        )
    audit.record(
        session,
        EventTag.DIRECTORY_IMPORTED,
        actor=actor,
        subject=None,
        data={
            "source": source,
            "sha256": hashlib.sha256(data).hexdigest(),
            "full": full,
            "imported": result.imported,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "left": result.left,
            "rejected": len(result.rejected),
            "departures_skipped": result.departures_skipped,
        },
        clock=clock,
    )
    return result


def _mark_left(
    session: Session,
    gone: list[Any],
    result: ImportResult,
    *,
    actor: str,
    clock: Clock,
    on_suspend: Iterable[SuspensionHook],
) -> None:
    now = clock.now()
    ids = [p.id for p in gone]
    for chunk in _chunks(ids):
        session.execute(
            update(Professional)
            .where(Professional.id.in_(chunk))
            .values(status=DirectoryStatus.LEFT.value, left_at=now, updated_at=now)
        )
    result.left = len(ids)
    by_id = {p.id: p.matricule for p in gone}
    hooks = list(on_suspend)
    for chunk in _chunks(ids):
        accounts = session.scalars(
            select(Account)
            .where(Account.professional_id.in_(chunk))
            .where(Account.status != AccountStatus.SUSPENDED)
            .with_for_update()
        ).all()
        for account in accounts:
            previous = account.status
            account.status = AccountStatus.SUSPENDED
            account.status_changed_at = now
            result.suspended_accounts.append(str(account.id))
            audit.record(
                session,
                EventTag.ACCOUNT_SUSPENDED,
                actor=actor,
                subject=f"professional:{by_id[account.professional_id]}",
                data={
                    "account_id": str(account.id),
                    "previous_status": previous,
                    "reason": "left the directory",
                },
                clock=clock,
            )
            for hook in hooks:
                hook(session, account)
    for professional in gone:
        audit.record(
            session,
            EventTag.DIRECTORY_LEFT,
            actor=actor,
            subject=f"professional:{professional.matricule}",
            data={},
            clock=clock,
        )
