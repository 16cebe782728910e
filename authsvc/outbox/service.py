"""Enqueueing and delivering outbox messages.

Delivery is at-least-once with a lease: a worker *claims* due messages (``claimed_until`` = now +
lease, in a short transaction, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so that several workers
never claim the same row), delivers them outside any transaction, then marks each one delivered,
or schedules its next attempt with back-off. A worker that dies mid-delivery leaves claims that
expire, and another worker takes the messages up again.

Retries: the first within 30 s, then backing off to one attempt an hour, for three days; then the
message is abandoned (logged as an error, its payload erased). A message may carry its own expiry
(a verification code is useless after 10 minutes): past it, it is abandoned instead of tried.

The lease outlasts the worst delivery of a whole batch (:data:`CLAIM_BATCH` messages, each bounded
by :data:`DELIVERY_TIMEOUT`), so that no other worker claims a message that is still being
delivered; and a worker settles only what it still owns (the ``claimed_until`` it set), so that
even a worker that was stopped past its lease (a paused VM) cannot overwrite another's outcome.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..clock import Clock, system_clock
from ..db import Database
from ..security.secrets import KeyedHasher, Purpose
from .models import OutboxMessage

log = logging.getLogger("authsvc.outbox")

BACKOFF = [timedelta(seconds=s) for s in (15, 30, 60, 120, 300, 600, 1200, 1800, 3600)]
RETRY_PERIOD = timedelta(days=3)
#: messages claimed per round
CLAIM_BATCH = 5
#: the longest one delivery may take: an SMTP exchange is about 6 network steps (connect, EHLO,
#: STARTTLS, EHLO, AUTH, MAIL/RCPT/DATA), each bounded by SMTP_TIMEOUT (10 s); a back-channel
#: logout is one HTTP request with its own timeout (5 s)
DELIVERY_TIMEOUT = timedelta(seconds=60)
#: twice the worst case of a whole batch
LEASE = 2 * CLAIM_BATCH * DELIVERY_TIMEOUT

#: A handler delivers one message or raises; ``kind`` → handler.
Handler = Callable[[Mapping[str, Any]], None]


class PermanentFailure(Exception):
    """Delivery can never succeed (e.g. an address the server refuses): do not retry."""


def backoff(attempts: int) -> timedelta:
    return BACKOFF[min(attempts, len(BACKOFF)) - 1] if attempts > 0 else timedelta(0)


class Sealer:
    """Encrypts payloads at rest with a key derived from the instance secret.

    Seals with the current secret's key; opens with it or with a key of one of the fallback
    secrets (``AUTHSVC_SECRET_KEY_FALLBACKS``), so that what was queued before a rotation of
    ``AUTHSVC_SECRET_KEY`` is still delivered after it.
    """

    def __init__(self, hasher: KeyedHasher) -> None:
        self._fernet = MultiFernet(
            [Fernet(base64.urlsafe_b64encode(key)) for key in hasher.keys(Purpose.OUTBOX)]
        )

    def seal(self, payload: Mapping[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(payload, ensure_ascii=False).encode())

    def open(self, sealed: bytes) -> dict[str, Any]:
        return json.loads(self._fernet.decrypt(sealed))  # type: ignore[no-any-return]


def enqueue(
    session: Session,
    kind: str,
    payload: Mapping[str, Any],
    *,
    summary: str,
    sealer: Sealer,
    clock: Clock = system_clock,
    expires_at: datetime | None = None,
) -> OutboxMessage:
    """Add a message inside the caller's transaction: it exists if and only if the change does.

    :param expires_at: when the message becomes useless (a one-time code that expired): it is
        then abandoned rather than delivered or retried. None: tried for :data:`RETRY_PERIOD`.
    """
    now = clock.now()
    message = OutboxMessage(
        kind=kind,
        payload=sealer.seal(payload),
        summary=summary[:300],
        created_at=now,
        next_attempt_at=now,
        attempts=0,
        expires_at=expires_at,
    )
    session.add(message)
    return message


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    abandoned: int = 0


@dataclass(frozen=True)
class Claimed:
    """A message this worker claimed: it owns it while ``claimed_until`` is still the row's."""

    id: int
    kind: str
    payload: bytes | None
    attempts: int
    claimed_until: datetime
    expires_at: datetime | None


class Outbox:
    """Claims and delivers due messages; safe to run in several threads, processes and hosts."""

    def __init__(
        self,
        db: Database,
        sealer: Sealer,
        handlers: Mapping[str, Handler],
        *,
        clock: Clock = system_clock,
        lease: timedelta = LEASE,
    ) -> None:
        self.db = db
        self.sealer = sealer
        self.handlers = dict(handlers)
        self.clock = clock
        self.lease = lease

    def claim(self, limit: int = CLAIM_BATCH) -> list[Claimed]:
        now = self.clock.now()
        until = now + self.lease
        with self.db.transaction() as session:
            due = (
                select(OutboxMessage.id)
                .where(OutboxMessage.delivered_at.is_(None))
                .where(OutboxMessage.abandoned_at.is_(None))
                .where(OutboxMessage.next_attempt_at <= now)
                .where(
                    (OutboxMessage.claimed_until.is_(None)) | (OutboxMessage.claimed_until < now)
                )
                .where(OutboxMessage.kind.in_(list(self.handlers)))
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
                .limit(limit)
            )
            if self.db.dialect == "postgresql":
                due = due.with_for_update(skip_locked=True)
            ids = list(session.scalars(due))
            if not ids:
                return []
            rows = session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids))
                .values(claimed_until=until)
                .returning(
                    OutboxMessage.id,
                    OutboxMessage.kind,
                    OutboxMessage.payload,
                    OutboxMessage.attempts,
                    OutboxMessage.expires_at,
                )
            ).all()
        return [Claimed(r.id, r.kind, r.payload, r.attempts, until, r.expires_at) for r in rows]

    def deliver_due(self, limit: int = CLAIM_BATCH) -> DeliveryReport:
        report = DeliveryReport()
        for claimed in self.claim(limit):
            error: str | None = None
            permanent = False
            attempted = True
            try:
                if claimed.expires_at is not None and self.clock.now() >= claimed.expires_at:
                    attempted = False
                    raise PermanentFailure("expired before it could be delivered")
                if claimed.payload is None:
                    raise PermanentFailure("the message has no payload")
                self.handlers[claimed.kind](self.sealer.open(claimed.payload))
            except InvalidToken:
                error, permanent = "payload cannot be decrypted (was the secret key changed?)", True
            except PermanentFailure as exc:
                error, permanent = str(exc) or exc.__class__.__name__, True
            except Exception as exc:
                error = f"{exc.__class__.__name__}: {exc}"[:1000]
            self._settle(claimed, error, permanent, report, attempted=attempted)
        return report

    def _settle(
        self,
        claimed: Claimed,
        error: str | None,
        permanent: bool,
        report: DeliveryReport,
        *,
        attempted: bool = True,
    ) -> None:
        now = self.clock.now()
        attempts = claimed.attempts + (1 if attempted else 0)
        with self.db.transaction() as session:
            stmt = select(OutboxMessage).where(OutboxMessage.id == claimed.id)
            if self.db.dialect == "postgresql":
                stmt = stmt.with_for_update()
            message = session.scalars(stmt).one_or_none()
            if message is None or message.claimed_until != claimed.claimed_until:
                # the lease ran out and another worker claimed the message: its outcome is
                # that worker's to record, not ours to overwrite
                log.warning(
                    "outbox %s %d: the claim expired during delivery (%s); "
                    "its outcome is left to the worker that holds it now",
                    claimed.kind,
                    claimed.id,
                    "delivered" if error is None else f"failed: {error}",
                )
                return
            message.attempts = attempts
            message.claimed_until = None
            if error is None:
                message.delivered_at = now
                message.payload = None  # delivered: nothing secret stays behind
                message.last_error = None
                report.delivered += 1
                log.info("outbox %s %d delivered (%s)", message.kind, message.id, message.summary)
                return
            message.last_error = error
            next_attempt = now + backoff(attempts)
            if (
                permanent
                or now - message.created_at >= RETRY_PERIOD
                or (message.expires_at is not None and next_attempt >= message.expires_at)
            ):
                message.abandoned_at = now
                message.payload = None
                report.abandoned += 1
                expired = message.expires_at is not None and next_attempt >= message.expires_at
                log.log(
                    logging.WARNING if expired else logging.ERROR,
                    "outbox %s %d abandoned after %d attempts (%s): %s",
                    message.kind,
                    message.id,
                    attempts,
                    message.summary,
                    error,
                )
                return
            message.next_attempt_at = next_attempt
            report.failed += 1
            log.warning(
                "outbox %s %d attempt %d failed (%s): %s; next at %s",
                message.kind,
                message.id,
                attempts,
                message.summary,
                error,
                message.next_attempt_at.isoformat(timespec="seconds"),
            )

    def pending(self) -> int:
        from sqlalchemy import func

        with self.db.transaction() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.delivered_at.is_(None))
                    .where(OutboxMessage.abandoned_at.is_(None))
                )
                or 0
            )


class OutboxWorker:
    """A daemon thread that delivers due messages, woken at once by :meth:`notify`.

    It also runs ``maintenance`` (:func:`authsvc.maintenance.purge`) about every
    ``maintenance_interval`` seconds, the first time a random part of that after it starts, so
    that the processes of a deployment do not all purge at the same moment.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        interval: float = 2.0,
        maintenance: Callable[[], object] | None = None,
        maintenance_interval: float = 3600.0,
    ) -> None:
        self.outbox = outbox
        self.interval = interval
        self.maintenance = maintenance
        self.maintenance_interval = maintenance_interval
        self._next_maintenance = time.monotonic() + random.uniform(  # noqa: S311 - not a secret
            min(60.0, maintenance_interval), maintenance_interval
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="authsvc-outbox", daemon=True)
            self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> DeliveryReport:
        return self.outbox.deliver_due()

    def run_maintenance_if_due(self) -> bool:
        """Run the maintenance if its time has come; True if it ran (successfully or not)."""
        if self.maintenance is None or time.monotonic() < self._next_maintenance:
            return False
        self._next_maintenance = time.monotonic() + self.maintenance_interval
        try:
            self.maintenance()
        except Exception:  # a failed purge is tried again at the next interval
            log.warning("outbox worker: maintenance failed; trying again later", exc_info=True)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while not self._stop.is_set():
                    report = self.outbox.deliver_due()
                    if report.delivered + report.failed + report.abandoned == 0:
                        break
            except Exception:  # a database that restarts must not kill the worker
                log.warning("outbox worker: delivery round failed; retrying", exc_info=True)
            self.run_maintenance_if_due()
            self._wake.wait(self.interval)
            self._wake.clear()
