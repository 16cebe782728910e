"""The tables of the audit trail.

``audit_events`` is append-only and chained: each event's ``hash`` is an HMAC (keyed with a key
derived from the instance secret) over its own fields and the previous event's hash.
``audit_chain_heads`` holds the last sequence number and hash of each chain; appending locks that
row, which orders the chain and lets :func:`~authsvc.audit.service.verify` detect a removed tail.

Database triggers (migration 0001) enforce the same rules for anyone who bypasses authsvc: no
UPDATE, DELETE or TRUNCATE of events; an event can only be appended right after the head; the
head can only advance, by one, to an event that exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base

GENESIS_HASH = "0" * 64


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (UniqueConstraint("chain", "seq", name="uq_audit_events_chain_seq"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    chain: Mapped[int] = mapped_column(SmallInteger, default=0)
    seq: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    tag: Mapped[str] = mapped_column(String(64), index=True)
    #: who did it: ``cli:<os user>``, ``account:<id>``, ``staff:<id>``, ``client:<id>``, ``system``
    actor: Mapped[str] = mapped_column(String(200))
    #: what it was done to, e.g. ``professional:<matricule>``; searchable by the helpdesk
    subject: Mapped[str | None] = mapped_column(String(200), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: which key linked this event (see authsvc.audit.keys)
    key_id: Mapped[str] = mapped_column(String(16))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    __tablename__ = "audit_chain_heads"

    chain: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
