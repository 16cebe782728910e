"""The account pages' service: who is signed in, the account's sessions, changing the password.

Everything here is reached with the browser's provider session (the ``authsvc_session`` cookie,
found with :meth:`~authsvc.sessions.service.Sessions.find`): no session, no account page. The rules
(docs/account.md):

- A person sees and ends only their own account's sessions; any other ``sid`` is "not found".
  Ending the current session signs the browser out.
- Changing the password needs the current password unless the session is *full* now (smartcard,
  ``acr`` …/high). A wrong current password counts as a failed password attempt for the account:
  the same count, back-off and lock as the sign-in (:mod:`authsvc.account.failures`).
- The new password must meet the policy (:func:`~authsvc.security.passwords.check_policy`, with the
  person's names, matricule and email) and is hashed with Argon2id.
- A change ends every *other* session of the account (their tokens die, their relying services are
  told): whoever knew the old password may have signed in somewhere. The current session goes on —
  the person just proved who they are in it. The change is audited and the person is told by mail.
- Every state-changing request carries a CSRF token bound to the session cookie
  (:meth:`AccountService.csrf_token`).

Argon2 runs outside any transaction (as at sign-in): a transaction reads, the hashing happens, a
second transaction checks that nothing moved meanwhile and writes.
"""

from __future__ import annotations

import hmac
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..accounts.models import Account, AccountStatus
from ..audit import service as audit
from ..audit.tags import EventTag
from ..directory.models import Professional
from ..errors import FlowError
from ..oidc.claims import ACR_HIGH
from ..oidc.models import Client
from ..outbox.service import enqueue
from ..security.passwords import WeakPassword, check_policy
from ..security.secrets import Purpose
from ..sessions.models import ProviderSession, SessionClient
from ..sessions.service import IDLE_TIMEOUT, acr_of
from ..web.i18n import gettext
from .failures import count_wrong_password

if TYPE_CHECKING:
    from ..app import Services

log = logging.getLogger("authsvc.account")

#: at most this many sessions are listed (the most recently used first)
MAX_LISTED = 50
#: a sid is a URL-safe random token (``random_token(24)``); anything else is not one (and never
#: reaches the database: a NUL in a query parameter is an error on PostgreSQL)
SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
END_REASON = "ended from the account page"
CHANGED_REASON = "password changed"
LOCKED_REASON = "account locked"


class AccountError(FlowError):
    """An answer of the account API: ``error``, ``error_description``, an HTTP status, and for a
    weak password the policy's ``reason``; ``retry_after`` with a 429."""


def not_signed_in() -> AccountError:
    return AccountError(
        "login_required",
        "You are not signed in: sign in to one of the platform's services, then come back.",
        status=401,
    )


@dataclass(frozen=True)
class Overview:
    """Who is signed in, and the level of this session."""

    sid: str
    subject: str
    given_name: str
    family_name: str
    matricule: str
    profession: str
    email: str | None
    acr: str
    amr: list[str]
    auth_time: datetime
    full_until: datetime | None
    expires_at: datetime

    @property
    def full(self) -> bool:
        return self.acr == ACR_HIGH

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.family_name}"


@dataclass(frozen=True)
class TookPart:
    client_id: str
    name: str
    first_at: datetime


@dataclass(frozen=True)
class SessionInfo:
    """One live session of the account, as its owner sees it."""

    sid: str
    current: bool
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    acr: str
    amr: list[str]
    user_agent: str | None
    ip: str | None
    services: list[TookPart] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        """How the person authenticated in this session, in words the page translates."""
        methods = []
        if "pwd" in self.amr:
            methods.append("password")
        if "sc" in self.amr:
            methods.append("smartcard")
        return methods


@dataclass(frozen=True)
class Ended:
    sid: str
    #: the browser's own session: it is signed out
    signed_out: bool


@dataclass(frozen=True)
class Changed:
    #: how many other sessions the change ended
    sessions_ended: int
    verified_by: str


def is_live(session: ProviderSession, now: datetime) -> bool:
    """What :meth:`Sessions.find` would accept (the account's status aside)."""
    return (
        session.ended_at is None
        and now < session.expires_at
        and now - session.last_seen_at < IDLE_TIMEOUT
    )


def password_changed_mail(*, to: str, name: str, date: str, lang: str) -> dict[str, Any]:
    """The mail telling the person that their password was changed (the outbox's ``mail`` kind)."""
    greeting = gettext(lang, "mail.verify.greeting", name=name)
    body = gettext(lang, "mail.password_changed.body", date=date)
    signature = gettext(lang, "mail.signature")
    paragraphs = "".join(f"<p>{escape(p)}</p>" for p in (greeting, body, signature))
    return {
        "to": to,
        "subject": gettext(lang, "mail.password_changed.subject"),
        "lang": lang,
        "text": f"{greeting}\n\n{body}\n\n-- \n{signature}\n",
        "html": (
            f'<!doctype html><html lang="{escape(lang)}"><head><meta charset="utf-8"></head>'
            f'<body style="font-family:sans-serif;line-height:1.5">{paragraphs}</body></html>'
        ),
    }


class AccountService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.clock = services.clock

    # --- the session and its CSRF token -----------------------------------------------------------

    def csrf_token(self, cookie: str | None) -> str:
        """The account pages' anti-CSRF token: a keyed hash of the session cookie, for this purpose
        only (a new cookie at sign-in or step-up makes a new token)."""
        return self.services.hasher.hash(Purpose.FLOW_BINDING, f"account\n{cookie or ''}")[:32]

    def csrf_ok(self, token: Any, cookie: str | None) -> bool:
        return isinstance(token, str) and hmac.compare_digest(
            token.encode("utf-8", "replace"), self.csrf_token(cookie).encode()
        )

    def current(self, db: Session, cookie: str | None) -> ProviderSession:
        session = self.services.sessions.find(db, cookie)
        if session is None:
            raise not_signed_in()
        return session

    def checked(self, db: Session, cookie: str | None, csrf: Any) -> ProviderSession:
        """The browser's live session, for a state-changing request with the right CSRF token."""
        session = self.current(db, cookie)
        if not self.csrf_ok(csrf, cookie):
            raise AccountError(
                "invalid_csrf_token",
                "The request's csrf_token does not match this session: reload the page.",
                status=403,
            )
        return session

    # --- reading ----------------------------------------------------------------------------------

    def overview(self, cookie: str | None) -> Overview:
        with self.services.db.transaction() as db:  # find() may end an expired session
            session = self.current(db, cookie)
            account = db.get_one(Account, session.account_id)
            professional = db.get_one(Professional, account.professional_id)
            return Overview(
                sid=session.id,
                subject=account.subject,
                given_name=professional.given_name,
                family_name=professional.family_name,
                matricule=professional.matricule,
                profession=professional.profession,
                email=account.email,
                acr=acr_of(session, self.clock.now()),
                amr=list(session.amr),
                auth_time=session.auth_time,
                full_until=session.full_until,
                expires_at=session.expires_at,
            )

    def sessions(self, cookie: str | None) -> list[SessionInfo]:
        """The account's live sessions: this browser's first, then the most recently used."""
        now = self.clock.now()
        with self.services.db.transaction() as db:
            current = self.current(db, cookie)
            rows = db.scalars(
                select(ProviderSession)
                .where(ProviderSession.account_id == current.account_id)
                .where(ProviderSession.ended_at.is_(None))
                .where(ProviderSession.expires_at > now)
                .where(ProviderSession.last_seen_at > now - IDLE_TIMEOUT)
                .order_by(ProviderSession.last_seen_at.desc(), ProviderSession.created_at.desc())
                .limit(MAX_LISTED)
            ).all()
            if current not in rows:
                rows = [current, *rows[: MAX_LISTED - 1]]
            took_part: dict[str, list[TookPart]] = {row.id: [] for row in rows}
            for sid, client_id, name, first_at in db.execute(
                select(
                    SessionClient.session_id, Client.client_id, Client.name, SessionClient.first_at
                )
                .join(Client, Client.client_id == SessionClient.client_id)
                .where(SessionClient.session_id.in_(list(took_part)))
                .order_by(SessionClient.first_at)
            ).all():
                took_part[sid].append(TookPart(client_id, name, first_at))
            listed = [
                SessionInfo(
                    sid=row.id,
                    current=row.id == current.id,
                    created_at=row.created_at,
                    last_seen_at=row.last_seen_at,
                    expires_at=row.expires_at,
                    acr=acr_of(row, now),
                    amr=list(row.amr),
                    user_agent=row.user_agent,
                    ip=row.ip,
                    services=took_part[row.id],
                )
                for row in rows
            ]
        return sorted(listed, key=lambda s: not s.current)  # stable: the order above otherwise

    # --- ending a session -------------------------------------------------------------------------

    def end_session(self, cookie: str | None, csrf: Any, sid: str) -> Ended:
        """End one of the account's own sessions (its tokens die, its services are told)."""
        with self.services.db.transaction() as db:
            current = self.checked(db, cookie, csrf)
            target = (
                db.get(ProviderSession, sid, with_for_update=True)
                if isinstance(sid, str) and SID.fullmatch(sid)
                else None
            )
            if (
                target is None
                or target.account_id != current.account_id
                or target.ended_at is not None
            ):
                # someone else's session, or one that is over, is the same "not found"
                raise AccountError(
                    "session_not_found", "You have no live session with this id.", status=404
                )
            self.services.sessions.end(
                db, target, END_REASON, actor=f"account:{current.account_id}"
            )
            return Ended(sid=target.id, signed_out=target.id == current.id)

    # --- changing the password --------------------------------------------------------------------

    def change_password(
        self,
        cookie: str | None,
        csrf: Any,
        *,
        current_password: str | None,
        new_password: str,
        ip: str | None,
        lang: str,
    ) -> Changed:
        svc = self.services
        now = self.clock.now()
        with svc.db.transaction() as db:
            session = self.checked(db, cookie, csrf)
            sid = session.id
            full = acr_of(session, now) == ACR_HIGH
            account = db.get_one(Account, session.account_id)
            professional = db.get_one(Professional, account.professional_id)
            account_id = account.id
            stored = account.password_hash
            matricule = professional.matricule
            names = (professional.given_name, professional.family_name)
            email = account.email or ""

        if current_password is None and not full:
            raise AccountError(
                "current_password_required",
                "Type your current password (or sign in with your smartcard to change it without).",
            )
        verified: bool | None = None
        if current_password is not None:
            wait = svc.login_failures.wait(matricule)
            if wait:
                raise AccountError(
                    "too_many_requests",
                    "Too many wrong passwords for this account: wait before trying again.",
                    status=429,
                    retry_after=wait,
                )
            verified = svc.passwords.verify(stored, current_password)  # Argon2: no transaction
        if verified is False:
            locked_now = self._wrong_current_password(cookie, csrf, account_id, matricule, ip)
            svc.login_failures.hit(matricule)
            if locked_now:
                raise AccountError(
                    "account_locked",
                    "Too many wrong passwords: your account is locked and every session of it "
                    "ended. The helpdesk can unlock it.",
                    status=403,
                )
            raise AccountError("invalid_current_password", "The current password is not right.")
        if current_password is not None and hmac.compare_digest(
            current_password.encode(), new_password.encode()
        ):
            raise AccountError(
                "same_password", "The new password must be different from the current one."
            )
        try:
            check_policy(
                new_password,
                matricule=matricule,
                names=names,
                other_inputs=[email, email.split("@")[0]] if email else [],
            )
        except WeakPassword as exc:
            raise AccountError("weak_password", str(exc), reason=exc.reason) from None
        new_hash = svc.passwords.hash(new_password)  # Argon2: no transaction

        with svc.db.transaction() as db:
            session = self.checked(db, cookie, csrf)
            locked = db.get(Account, account_id, with_for_update=True)
            if session.id != sid or locked is None or locked.password_hash != stored:
                raise AccountError(
                    "conflict",
                    "Your password or your session changed meanwhile: reload the page.",
                    status=409,
                )
            if verified is None and acr_of(session, self.clock.now()) != ACR_HIGH:
                raise AccountError(  # the full level lapsed between the two transactions
                    "current_password_required", "Type your current password."
                )
            locked.password_hash = new_hash
            if verified:
                locked.failed_logins = 0  # a right password, as at sign-in
            ended = self._end_others(db, account_id, keep=sid, reason=CHANGED_REASON)
            verified_by = "current_password" if verified else "full_session"
            if locked.email:
                enqueue(
                    db,
                    "mail",
                    password_changed_mail(
                        to=locked.email,
                        name=f"{names[0]} {names[1]}",
                        date=self.clock.now().strftime("%Y-%m-%d %H:%M UTC"),
                        lang=lang,
                    ),
                    summary=f"password changed, to {locked.email}",
                    sealer=svc.sealer,
                    clock=self.clock,
                )
            audit.record(
                db,
                EventTag.ACCOUNT_PASSWORD_CHANGED,
                actor=f"account:{account_id}",
                subject=f"professional:{matricule}",
                data={
                    "session": sid[:12],
                    "verified_by": verified_by,
                    "sessions_ended": ended,
                    "ip": ip,
                },
                clock=self.clock,
            )
        if verified:
            svc.login_failures.clear(matricule)  # a right password ends the back-off, as at sign-in
        svc.outbox_worker.notify()
        log.info("password changed for account %s (%d other sessions ended)", account_id, ended)
        return Changed(sessions_ended=ended, verified_by=verified_by)

    def _wrong_current_password(
        self, cookie: str | None, csrf: Any, account_id: uuid.UUID, matricule: str, ip: str | None
    ) -> bool:
        """Count the failure (committed before the answer); if it locks the account, every session
        of the account ends now rather than at its next use. True if it locked the account."""
        with self.services.db.transaction() as db:
            session = self.checked(db, cookie, csrf)
            account = db.get(Account, account_id, with_for_update=True)
            if account is None:
                raise not_signed_in()
            count_wrong_password(
                self.services.login, db, matricule=matricule, account=account, ip=ip
            )
            audit.record(
                db,
                EventTag.ACCOUNT_PASSWORD_CHANGE_REFUSED,
                actor=f"account:{account_id}",
                subject=f"professional:{matricule}",
                data={
                    "reason": "wrong current password",
                    "session": session.id[:12],
                    "failed_logins": account.failed_logins,
                    "ip": ip,
                },
                clock=self.clock,
            )
            if account.status == AccountStatus.LOCKED:
                self._end_others(db, account_id, keep=None, reason=LOCKED_REASON)
                return True
            return False

    def _end_others(
        self, db: Session, account_id: uuid.UUID, *, keep: str | None, reason: str
    ) -> int:
        """End every session of the account but ``keep``; the number ended."""
        query = (
            select(ProviderSession)
            .where(ProviderSession.account_id == account_id)
            .where(ProviderSession.ended_at.is_(None))
            .order_by(ProviderSession.id)
            .with_for_update()
        )
        if keep is not None:
            query = query.where(ProviderSession.id != keep)
        others = db.scalars(query).all()
        for other in others:
            self.services.sessions.end(db, other, reason, actor=f"account:{account_id}")
        return len(others)
