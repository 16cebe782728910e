"""Provider sessions: opening, stepping up, finding, ending (with everything that dies with them).

A session ends (logout, expiry, helpdesk revocation of its card, account suspended); when it ends,
every token family issued from it is revoked (refresh tokens refused, access tokens inactive) and
every relying service that took part in it and registered a back-channel logout URI is told,
through the outbox (OpenID Connect Back-Channel Logout 1.0).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session

from ..accounts.models import Account, AccountStatus
from ..audit import service as audit
from ..audit.tags import EventTag
from ..clock import Clock
from ..config import Settings
from ..oidc.claims import ACR_HIGH, ACR_LOW, subject
from ..oidc.models import AccessToken, Client, RefreshToken, TokenFamily
from ..outbox.service import Sealer, enqueue
from ..security.secrets import KeyedHasher, Purpose, random_token
from .models import ProviderSession, SessionClient

log = logging.getLogger("authsvc.sessions")

#: a session no one used for this long is over (ours: INTERFACE names only the maximum age)
IDLE_TIMEOUT = timedelta(hours=2)
TOUCH_EVERY = timedelta(minutes=1)
COOKIE = "authsvc_session"

_INSERT_SESSION = insert(cast(Table, ProviderSession.__table__))


def acr_of(session: ProviderSession, now: datetime) -> str:
    """The session's level now: full while the card's presentation is recent enough."""
    return ACR_HIGH if session.full_until is not None and now < session.full_until else ACR_LOW


@dataclass(frozen=True)
class Opened:
    session: ProviderSession
    cookie: str  # the value for the browser, given once


class Sessions:
    def __init__(
        self, settings: Settings, hasher: KeyedHasher, sealer: Sealer, clock: Clock
    ) -> None:
        self.settings = settings
        self.hasher = hasher
        self.sealer = sealer
        self.clock = clock

    def find(
        self, db: Session, cookie: str | None, *, touch: bool = True
    ) -> ProviderSession | None:
        """The live session of this browser, or None (ended, expired, idle, account not active)."""
        if not cookie or len(cookie) > 100:
            return None
        row = db.scalars(
            select(ProviderSession).where(
                ProviderSession.cookie_hash == self.hasher.hash(Purpose.SESSION_COOKIE, cookie)
            )
        ).one_or_none()
        if row is None or row.ended_at is not None:
            return None
        now = self.clock.now()
        if now >= row.expires_at:
            self.end(db, row, "expired", actor="system")
            return None
        if now - row.last_seen_at >= IDLE_TIMEOUT:
            self.end(db, row, "idle", actor="system")
            return None
        account = db.get(Account, row.account_id)
        if account is None or account.status != AccountStatus.ACTIVE:
            self.end(db, row, f"account {account.status if account else 'gone'}", actor="system")
            return None
        if touch and now - row.last_seen_at >= TOUCH_EVERY:
            row.last_seen_at = now
        return row

    def sign_in(
        self,
        db: Session,
        account_id: uuid.UUID,
        *,
        amr: list[str],
        card_id: uuid.UUID | None = None,
        previous: ProviderSession | None = None,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> Opened:
        """A sign-in or a step-up: a new cookie always (no fixation); the same session (``sid``)
        when the same person steps up, a new one otherwise.

        A new session is written with a Core ``INSERT`` (a sign-in's hot path: no ORM flush): the
        :class:`ProviderSession` returned for it carries its values but is not part of ``db``'s
        unit of work (as :func:`~authsvc.audit.service.record`'s events). A session stepped up is
        ``previous`` itself, changed in the unit of work.
        """
        now = self.clock.now()
        cookie = random_token(32)
        cookie_hash = self.hasher.hash(Purpose.SESSION_COOKIE, cookie)
        card = card_id is not None
        full_until = now + timedelta(seconds=self.settings.full_level_max_age) if card else None
        if previous is not None and previous.ended_at is None and previous.account_id == account_id:
            previous.cookie_hash = cookie_hash
            previous.amr = sorted(set(previous.amr) | set(amr))
            previous.auth_time = now
            previous.last_seen_at = now
            if card:
                previous.full_until = full_until
                previous.card_id = card_id
            audit.record(
                db,
                EventTag.SESSION_STEPPED_UP if card else EventTag.SESSION_REAUTHENTICATED,
                actor=f"account:{account_id}",
                subject=f"session:{previous.id[:12]}",
                data={"amr": amr, "ip": ip},
                clock=self.clock,
            )
            return Opened(previous, cookie)
        if previous is not None and previous.ended_at is None:
            self.end(db, previous, "another person signed in", actor=f"account:{account_id}")
        values = {
            "id": random_token(24),
            "cookie_hash": cookie_hash,
            "account_id": account_id,
            "amr": list(amr),
            "auth_time": now,
            "full_until": full_until,
            "card_id": card_id,
            "created_at": now,
            "last_seen_at": now,
            "expires_at": now + timedelta(seconds=self.settings.session_max_age),
            "ended_at": None,
            "end_reason": None,
            "user_agent": (user_agent or "")[:300] or None,
            "ip": ip,
        }
        db.execute(_INSERT_SESSION, values)
        row = ProviderSession(**values)
        audit.record(
            db,
            EventTag.SESSION_OPENED,
            actor=f"account:{account_id}",
            subject=f"session:{row.id[:12]}",
            data={"amr": amr, "ip": ip, "card": str(card_id) if card_id else None},
            clock=self.clock,
        )
        return Opened(row, cookie)

    def add_client(self, db: Session, session: ProviderSession, client_id: str) -> None:
        exists = db.get(SessionClient, (session.id, client_id))
        if exists is None:
            db.add(
                SessionClient(session_id=session.id, client_id=client_id, first_at=self.clock.now())
            )

    def end_all(self, db: Session, account_id: uuid.UUID, reason: str, *, actor: str) -> int:
        """End every live session of an account (suspended, locked …); the number ended."""
        sessions = db.scalars(
            select(ProviderSession)
            .where(ProviderSession.account_id == account_id)
            .where(ProviderSession.ended_at.is_(None))
            .with_for_update()
        ).all()
        with audit.batch(db):  # one lock of the audit chain's head for all their events
            for session in sessions:
                self.end(db, session, reason, actor=actor)
        return len(sessions)

    def end(self, db: Session, session: ProviderSession, reason: str, *, actor: str) -> int:
        """End a session: its tokens die, its relying services are told. Returns the number of
        tokens (refresh and access) that were still live and are now revoked."""
        now = self.clock.now()
        if session.ended_at is not None:
            return 0
        session.ended_at = now
        session.end_reason = reason[:64]
        live_families = (
            select(TokenFamily.id)
            .where(TokenFamily.session_id == session.id)
            .where(TokenFamily.revoked_at.is_(None))
        )
        live_tokens = int(
            db.scalar(
                select(func.count())
                .select_from(RefreshToken)
                .where(RefreshToken.family_id.in_(live_families))
                .where(RefreshToken.used_at.is_(None))
                .where(RefreshToken.expires_at > now)
            )
            or 0
        ) + int(
            db.scalar(
                select(func.count())
                .select_from(AccessToken)
                .where(AccessToken.family_id.in_(live_families))
                .where(AccessToken.revoked_at.is_(None))
                .where(AccessToken.expires_at > now)
            )
            or 0
        )
        revoked = db.execute(  # type: ignore[attr-defined]
            update(TokenFamily)
            .where(TokenFamily.session_id == session.id)
            .where(TokenFamily.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=f"session ended: {reason}"[:64])
        ).rowcount
        account = db.get(Account, session.account_id)
        clients = db.scalars(
            select(Client)
            .join(SessionClient, SessionClient.client_id == Client.client_id)
            .where(SessionClient.session_id == session.id)
            .where(Client.backchannel_logout_uri.is_not(None))
        ).all()
        for client in clients:
            assert account is not None
            enqueue(
                db,
                "backchannel_logout",
                {
                    "uri": client.backchannel_logout_uri,
                    "client_id": client.client_id,
                    "alg": client.id_token_signed_response_alg,
                    "sub": subject(account, client.client_id, client.subject_type, self.hasher),
                    "sid": session.id,
                },
                summary=f"back-channel logout of session {session.id[:12]} to {client.client_id}",
                sealer=self.sealer,
                clock=self.clock,
            )
        audit.record(
            db,
            EventTag.SESSION_ENDED,
            actor=actor,
            subject=f"session:{session.id[:12]}",
            data={
                "account_id": str(session.account_id),
                "reason": reason,
                "token_families_revoked": revoked,
                "backchannel_logouts": [c.client_id for c in clients],
            },
            clock=self.clock,
        )
        log.info("session %s ended (%s)", session.id[:12], reason)
        return live_tokens
