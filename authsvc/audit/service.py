"""Writing and verifying the audit trail.

The chain (per ``chain`` number; authsvc writes chain 0)::

    hash(n) = HMAC-SHA-256( audit key, hash(n-1) ‖ "\\n" ‖ canonical JSON of event n )

where the canonical JSON (sorted keys, no spaces, UTF-8) holds the chain number, the key id, the
time, the tag, the actor, the subject and the data, but not the sequence number: the order of the
events is carried by the links alone, so that :func:`verify` can tell an edited event (its own hash
no longer matches its content) from a reordered or removed one (its content matches, its link does
not). The head row keeps the last sequence number and hash, which exposes a removed tail. The key
(:mod:`authsvc.audit.keys`) is derived from the instance secret, which is not in the database:
write access to the database is not enough to forge or recompute events. Operators can also keep
the head hash elsewhere (``authsvc audit verify --json`` prints it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..clock import Clock, system_clock
from .keys import AuditKeys
from .models import GENESIS_HASH, AuditChainHead, AuditEvent
from .tags import EventTag

#: Keys that must never appear in an event's data (SECURITY "Audit": no secret, code, password
#: or full token). A programming error, refused loudly.
FORBIDDEN_KEYS = frozenset(
    {
        "password",
        "code",
        "activation_code",
        "email_code",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "pin",
    }
)


def canonical(
    *,
    chain: int,
    key_id: str,
    occurred_at: datetime,
    tag: str,
    actor: str,
    subject: str | None,
    data: Mapping[str, Any],
) -> bytes:
    body = {
        "v": 2,
        "chain": chain,
        "key": key_id,
        "at": occurred_at.isoformat(timespec="microseconds"),
        "tag": tag,
        "actor": actor,
        "subject": subject,
        "data": data,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link(key: bytes, prev_hash: str, body: bytes) -> str:
    return hmac.new(key, prev_hash.encode("ascii") + b"\n" + body, hashlib.sha256).hexdigest()


def keys_of(session: Session) -> AuditKeys:
    keys = session.info.get("audit_keys")
    if keys is None:
        raise RuntimeError("the audit key is not configured on this database (Services does it)")
    return keys  # type: ignore[no-any-return]


def _check_data(data: Mapping[str, Any]) -> None:
    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if str(key).lower() in FORBIDDEN_KEYS:
                    raise ValueError(f"audit data must not carry secrets (key {key!r})")
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(data)


def record(
    session: Session,
    tag: EventTag,
    *,
    actor: str,
    subject: str | None = None,
    data: Mapping[str, Any] | None = None,
    clock: Clock = system_clock,
    chain: int = 0,
) -> AuditEvent:
    """Append an event to the chain, inside the caller's transaction.

    The chain head is locked (``SELECT … FOR UPDATE``; on SQLite the transaction already holds the
    write lock) until the caller commits, so concurrent writers append one after the other.
    """
    payload = dict(data or {})
    _check_data(payload)
    keys = keys_of(session)
    head = session.execute(
        select(AuditChainHead.seq, AuditChainHead.hash)
        .where(AuditChainHead.chain == chain)
        .with_for_update()
    ).one_or_none()
    if head is None:
        raise RuntimeError("the audit chain has no head row: run `authsvc db upgrade`")
    occurred_at = clock.now()
    body = canonical(
        chain=chain,
        key_id=keys.current_id,
        occurred_at=occurred_at,
        tag=str(tag),
        actor=actor,
        subject=subject,
        data=payload,
    )
    digest = link(keys.current, head.hash, body)
    event = AuditEvent(
        chain=chain,
        seq=head.seq + 1,
        occurred_at=occurred_at,
        tag=str(tag),
        actor=actor,
        subject=subject,
        data=payload,
        key_id=keys.current_id,
        prev_hash=head.hash,
        hash=digest,
    )
    session.add(event)
    session.flush()  # the event first: the database lets the head advance only to an event
    session.execute(
        update(AuditChainHead)
        .where(AuditChainHead.chain == chain)
        .values(seq=head.seq + 1, hash=digest)
    )
    return event


def cli_actor() -> str:
    """``cli:<os user>``: the actor of a command run by an operator."""
    try:
        user = os.getlogin()
    except OSError:
        import getpass

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
    return f"cli:{user}"


@dataclass
class Problem:
    event_id: int | None
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f"event {self.event_id} (seq {self.seq})" if self.event_id else f"seq {self.seq}"
        return f"{where}: {self.problem}"


@dataclass
class VerifyResult:
    events: int = 0
    problems: list[Problem] = field(default_factory=list)
    heads: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"events": self.events, "ok": self.ok}
        if self.heads:
            result["head"] = self.heads.get(0) or next(iter(self.heads.values()))
        if self.problems:
            result["problems"] = [
                {"event_id": p.event_id, "seq": p.seq, "problem": p.problem} for p in self.problems
            ]
        return result


def _events(session: Session) -> Iterator[AuditEvent]:
    stmt = (
        select(AuditEvent)
        .order_by(AuditEvent.chain, AuditEvent.seq)
        .execution_options(yield_per=2000)
    )
    for event in session.scalars(stmt):
        yield event
        session.expunge(event)


def verify(session: Session, *, max_problems: int = 20) -> VerifyResult:
    """Walk every chain from its genesis and report the first problems found, naming each event.

    Run it in a read transaction (``Database.read_transaction``): one snapshot, so that events
    appended while it runs are neither half-seen nor mistaken for tampering.
    """
    result = VerifyResult()
    keys = keys_of(session)
    heads = {h.chain: h for h in session.scalars(select(AuditChainHead))}
    state: dict[int, tuple[int, str]] = {chain: (0, GENESIS_HASH) for chain in heads}
    broken: set[int] = set()

    def report(event_id: int | None, seq: int | None, problem: str) -> None:
        if len(result.problems) < max_problems:
            result.problems.append(Problem(event_id, seq, problem))

    for event in _events(session):
        result.events += 1
        chain = event.chain
        if chain not in state:
            if chain not in broken:
                report(event.id, event.seq, f"belongs to chain {chain}, which has no head")
                broken.add(chain)
            continue
        last_seq, last_hash = state[chain]
        body = canonical(
            chain=event.chain,
            key_id=event.key_id,
            occurred_at=event.occurred_at,
            tag=event.tag,
            actor=event.actor,
            subject=event.subject,
            data=event.data,
        )
        key = keys.by_id.get(event.key_id)
        if key is None:
            report(
                event.id,
                event.seq,
                f"linked with an unknown key {event.key_id!r} (was AUTHSVC_SECRET_KEY changed "
                "without keeping the old one in AUTHSVC_SECRET_KEY_FALLBACKS?)",
            )
        elif not hmac.compare_digest(link(key, event.prev_hash, body), event.hash):
            report(event.id, event.seq, "edited: its content does not match its hash")
        elif event.seq != last_seq + 1:
            missing = event.seq - last_seq - 1
            if missing > 0:
                report(
                    event.id,
                    event.seq,
                    f"{missing} event(s) before it are missing (deleted): "
                    f"seq {last_seq + 1}..{event.seq - 1}",
                )
            else:
                report(event.id, event.seq, "duplicate sequence number")
        elif event.prev_hash != last_hash:
            report(
                event.id,
                event.seq,
                "out of order: it does not follow the event before it "
                "(reordered, or an event before it was replaced)",
            )
        # Carry on from this event so that one problem is reported once, not for every event after.
        state[chain] = (event.seq, event.hash)

    for chain, head in heads.items():
        last_seq, last_hash = state[chain]
        if head.seq > last_seq:
            report(
                None,
                last_seq + 1,
                f"the last {head.seq - last_seq} event(s) of chain {chain} are missing (deleted)",
            )
        elif head.seq < last_seq or head.hash != last_hash:
            report(None, head.seq, f"the head of chain {chain} does not match its last event")
        result.heads[chain] = head.hash
    return result
