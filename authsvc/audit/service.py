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
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from ..clock import Clock, system_clock
from .keys import AuditKeys
from .models import GENESIS_HASH, AuditChainHead, AuditEvent
from .tags import EventTag

#: every chain of the trail (migration 0008): chain 0 for everything but issued tokens, which go to
#: one of the others, so that token requests on several workers and instances do not all queue for
#: one head lock; ``verify`` expects every one of them
CHAINS = range(8)
TOKEN_CHAINS = range(1, 8)


def token_chain(session: Session | None = None) -> int:
    """The chain of an issued-token event: any of :data:`TOKEN_CHAINS` (spreading the locks),
    but one for all the events of a :func:`batch` (one head locked per transaction: two batches
    that locked heads in different orders would deadlock)."""
    current = session.info.get(_BATCH) if session is not None else None
    if isinstance(current, _Batch):
        return current.token_chain
    return secrets.choice(TOKEN_CHAINS)


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


@dataclass(frozen=True)
class RecordedEvent:
    """An event as :func:`record` appended it: its values and id (not an ORM object: building
    one, which the session would not track anyway, cost ~13 µs of every append)."""

    id: int | None
    chain: int
    seq: int
    occurred_at: datetime
    tag: str
    actor: str
    subject: str | None
    data: dict[str, Any]
    key_id: str
    prev_hash: str
    hash: str


#: ``session.info`` key of an open :func:`batch`
_BATCH = "authsvc.audit.batch"


@dataclass
class _Batch:
    #: the transaction the heads below belong to: their locks end with it
    transaction: object | None = None
    #: chain number -> (seq, hash) of the head as this transaction left it, once locked
    heads: dict[int, tuple[int, str]] = field(default_factory=dict)
    #: the chain of its issued-token events (:func:`token_chain`)
    token_chain: int = field(default_factory=lambda: secrets.choice(TOKEN_CHAINS))


@contextmanager
def batch(session: Session) -> Iterator[None]:
    """Append the events recorded in this block with one lock of each chain head.

    :func:`record` joins the batch of its session: the first event of a chain locks the head and
    reads it, as ever (``SELECT … FOR UPDATE``); the next ones, in the same transaction, reuse
    what the transaction itself wrote. Each event is still written at once, in the caller's
    transaction, right after the one before it, and the head still advances by one event at a time
    (the database's rules; nothing else in the chain changes). Only the repeated reading and
    locking of the head is saved. Nested batches join the outer one. Within a savepoint
    (``begin_nested``), events are appended as without a batch, and the batch forgets the heads,
    which the savepoint may roll back; so it does when the transaction ends.
    """
    if _BATCH in session.info:
        yield
        return
    session.info[_BATCH] = _Batch()
    try:
        yield
    finally:
        session.info.pop(_BATCH, None)


def record(
    session: Session,
    tag: EventTag,
    *,
    actor: str,
    subject: str | None = None,
    data: Mapping[str, Any] | None = None,
    clock: Clock = system_clock,
    chain: int = 0,
) -> RecordedEvent:
    """Append an event to the chain, inside the caller's transaction.

    The chain head is locked (``SELECT … FOR UPDATE``; on SQLite the transaction already holds the
    write lock) until the caller commits, so concurrent writers append one after the other. Within
    a :func:`batch`, the head is locked and read once per chain.

    The event is written with a Core ``INSERT``; what is returned carries its values and id
    (:class:`RecordedEvent`).
    """
    payload = dict(data or {})
    _check_data(payload)
    keys = keys_of(session)
    current: _Batch | None = session.info.get(_BATCH)
    heads: dict[int, tuple[int, str]] | None = None
    if current is not None:
        transaction = session.get_transaction()
        if transaction is None or transaction is not current.transaction:
            current.heads.clear()  # another transaction: the head must be locked again
        if session.in_nested_transaction():
            current.heads.clear()  # a savepoint may roll back what it appends: read afresh after
        else:
            heads = current.heads
    known = heads.get(chain) if heads is not None else None
    # the statements below are Core: on the session's connection, in its transaction, without
    # the ORM's execution of each; the session's pending changes first, as session.execute
    # would have flushed them (then the head is locked, as an ORM query did)
    connection = session.connection()
    if session.autoflush:
        session.flush()
    if known is None:
        head = connection.execute(_LOCK_HEAD, {"head_chain": chain}).one_or_none()
        if head is None:
            raise RuntimeError("the audit chain has no head row: run `authsvc db upgrade`")
        known = (head.seq, head.hash)
    prev_seq, prev_hash = known
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
    digest = link(keys.current, prev_hash, body)
    values = {
        "chain": chain,
        "seq": prev_seq + 1,
        "occurred_at": occurred_at,
        "tag": str(tag),
        "actor": actor,
        "subject": subject,
        "data": payload,
        "key_id": keys.current_id,
        "prev_hash": prev_hash,
        "hash": digest,
    }
    if heads is not None:
        heads.pop(chain, None)  # known again only once both statements below have succeeded
    # the event first: the database lets the head advance only to an event
    inserted = cast("CursorResult[Any]", connection.execute(_INSERT_EVENT, values))
    connection.execute(
        _ADVANCE_HEAD, {"head_chain": chain, "head_seq": prev_seq + 1, "head_hash": digest}
    )
    if current is not None and heads is not None:
        current.transaction = session.get_transaction()
        heads[chain] = (prev_seq + 1, digest)
    key = inserted.inserted_primary_key
    return RecordedEvent(id=key[0] if key else None, **values)


_EVENTS = cast(Table, AuditEvent.__table__)
_HEADS = cast(Table, AuditChainHead.__table__)
_INSERT_EVENT = insert(_EVENTS)
_LOCK_HEAD = (
    select(_HEADS.c.seq, _HEADS.c.hash)
    .where(_HEADS.c.chain == bindparam("head_chain"))
    .with_for_update()
)
_ADVANCE_HEAD = (
    update(_HEADS)
    .where(_HEADS.c.chain == bindparam("head_chain"))
    .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"))
)


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

    @property
    def head(self) -> str | None:
        """One digest of every chain's head: what to keep outside the database (it changes with
        any event appended to any chain, and proves none was rewritten wholesale)."""
        if not self.heads:
            return None
        text = "\n".join(f"{chain}:{digest}" for chain, digest in sorted(self.heads.items()))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"events": self.events, "ok": self.ok}
        if self.heads:
            result["head"] = self.head
            result["heads"] = {str(chain): digest for chain, digest in sorted(self.heads.items())}
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

    for chain in CHAINS:
        if chain not in heads:
            report(None, None, f"chain {chain} has no head (removed, with its events?)")

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
