"""Smartcard challenges: issued per flow, consumed once (SECURITY "Smartcard", INTERFACE §4).

A challenge is 32 random bytes from :mod:`secrets` (base64, 44 characters, the nonce Web eID
expects), bound to its flow and to the provider's origin, valid for 5 minutes.

A flow's *current* challenge is its newest one. Issuing a challenge removes the flow's earlier
unconsumed ones, and consuming only ever touches the newest, so that an earlier challenge can never
be used — even if two requests issued challenges for the same flow at the same moment.

Consuming is one statement — ``UPDATE … SET consumed_at = now WHERE id = <the flow's newest> AND
consumed_at IS NULL AND expires_at > now RETURNING …`` — whose row count says who won: of two
requests racing on one challenge, exactly one gets the row, also on PostgreSQL (the loser waits for
the winner's row lock, then finds ``consumed_at`` set). It happens *before* the signature is
checked and is committed whatever the verification says (:class:`~authsvc.pki.service.
SmartcardVerifier`), so a challenge is single-use even when verification fails.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from ..clock import Clock
from ..db import UTCDateTime
from .errors import Reason, refuse
from .models import FLOW_ID_LENGTH, SmartcardChallenge

#: SECURITY "Smartcard": a challenge expires within 5 minutes.
CHALLENGE_LIFETIME = timedelta(minutes=5)
NONCE_BYTES = 32
#: how long used and expired challenges are kept (for investigations) by :func:`purge_challenges`
RETENTION = timedelta(days=1)

# Consuming is on every smartcard verification's path: the statements are built once (building
# them costs more than running them), on the table itself (a Core UPDATE costs markedly less than
# the ORM's bulk UPDATE machinery), and run on the session's connection — the same transaction,
# without the ORM's per-statement overhead (docs/smartcard.md, "Cost").
_challenges: Table = SmartcardChallenge.__table__  # type: ignore[assignment]
_c = _challenges.c
#: the flow's current challenge: its newest
_NEWEST = select(func.max(_c.id)).where(_c.flow_id == bindparam("flow")).scalar_subquery()
_CONSUME = (
    update(_challenges)
    .where(_c.id == _NEWEST)
    .where(_c.consumed_at.is_(None))
    .where(_c.expires_at > bindparam("now", type_=UTCDateTime()))
    .values(consumed_at=bindparam("used_at", type_=UTCDateTime()))
    .returning(_c.nonce, _c.origin, _c.expires_at)
)
_WHY_NOT = select(_c.consumed_at, _c.expires_at).where(_c.id == _NEWEST)


@dataclass(frozen=True)
class Challenge:
    """What the card signs: ``nonce`` and ``origin``; and until when it may (INTERFACE §4)."""

    nonce: str
    origin: str
    expires_at: datetime

    def to_dict(self) -> dict[str, str]:
        """The ``challenge`` object of the flows API: ``{"nonce", "origin", "expires_at"}``."""
        return {
            "nonce": self.nonce,
            "origin": self.origin,
            "expires_at": self.expires_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }


def new_nonce() -> str:
    """Base64 of 32 random bytes from :mod:`secrets` (≥ 256 bits, as Web eID requires)."""
    return base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode("ascii")


def _check_flow_id(flow_id: str) -> None:
    if not isinstance(flow_id, str) or not 0 < len(flow_id) <= FLOW_ID_LENGTH:
        raise ValueError(f"a flow id is a string of 1 to {FLOW_ID_LENGTH} characters")


def issue_challenge(session: Session, flow_id: str, origin: str, clock: Clock) -> Challenge:
    """A new challenge for the flow, inside the caller's transaction.

    The flow's earlier unconsumed challenges are removed: only the newest can ever be consumed.
    """
    _check_flow_id(flow_id)
    now = clock.now()
    session.execute(
        delete(SmartcardChallenge)
        .where(SmartcardChallenge.flow_id == flow_id)
        .where(SmartcardChallenge.consumed_at.is_(None))
        .execution_options(synchronize_session=False)
    )
    challenge = SmartcardChallenge(
        flow_id=flow_id,
        nonce=new_nonce(),
        origin=origin,
        created_at=now,
        expires_at=now + CHALLENGE_LIFETIME,
    )
    session.add(challenge)
    session.flush()
    return Challenge(nonce=challenge.nonce, origin=origin, expires_at=challenge.expires_at)


def consume_challenge(session: Session, flow_id: str, clock: Clock) -> Challenge:
    """Atomically consume the flow's current challenge; raise ``CardRefused`` if there is none.

    Reasons: ``challenge_expired`` (the newest challenge is unused but past its 5 minutes),
    ``challenge_used`` (it was already consumed — a replay — or the flow has no challenge).
    The caller must commit even when what follows fails (see the module docstring).
    """
    now = clock.now()
    if not isinstance(flow_id, str) or not 0 < len(flow_id) <= FLOW_ID_LENGTH:
        raise refuse(Reason.CHALLENGE_USED, detail="no such flow")
    session.flush()  # what the session holds is in the database before the statement runs
    connection = session.connection()
    rows = connection.execute(_CONSUME, {"flow": flow_id, "now": now, "used_at": now}).all()
    if len(rows) == 1:
        nonce, origin, expires_at = rows[0]
        return Challenge(nonce=nonce, origin=origin, expires_at=expires_at)

    # Nothing consumed: say why (the statement above already decided; this only explains).
    latest = connection.execute(_WHY_NOT, {"flow": flow_id}).one_or_none()
    if latest is None:
        raise refuse(Reason.CHALLENGE_USED, detail="the flow has no challenge")
    if latest.consumed_at is not None:
        raise refuse(
            Reason.CHALLENGE_USED,
            detail=f"replayed: the challenge was used at {latest.consumed_at.isoformat()}",
        )
    raise refuse(
        Reason.CHALLENGE_EXPIRED,
        detail=f"the challenge expired at {latest.expires_at.isoformat()}",
    )


def purge_challenges(session: Session, clock: Clock, *, retention: timedelta = RETENTION) -> int:
    """Delete challenges that expired more than ``retention`` ago; return how many."""
    result = session.execute(
        delete(SmartcardChallenge)
        .where(SmartcardChallenge.expires_at < clock.now() - retention)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
