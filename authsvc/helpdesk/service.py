"""The helpdesk's actions (INTERFACE §5), the same for the console, the API and the CLI.

Every action needs an actor (``staff:<account id>`` or ``cli:<os user>``), is checked here rather
than in the view, and is recorded in the audit trail in the same transaction as its effect.

Revoking a card does, in one transaction: the card is marked revoked and put on the helpdesk's own
list (so that it signs no one in any more, even while its CA has not revoked it); every session it
opened or stepped up ends, which revokes every token family issued from those sessions (refresh
tokens refused, access tokens inactive at once) and queues a back-channel logout to every relying
service that took part; the audit trail records who, what, when and why. A new card can then be
bound only through a new activation letter.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from .. import matricule as matricules
from ..accounts.models import Account, AccountStatus
from ..activation import letters
from ..activation.models import ActivationLetter
from ..audit import service as audit
from ..audit.models import AuditEvent
from ..audit.tags import EventTag
from ..cards.models import Card, CardStatus
from ..directory.models import Professional
from ..errors import AuthsvcError, InvalidInput, NotFound
from ..pki.models import RevocationReason
from ..pki.revoked_cards import revoke_card as put_on_helpdesk_list
from ..sessions.models import ProviderSession, SessionClient
from ..sessions.service import acr_of
from .models import Role, StaffRole

if TYPE_CHECKING:
    from ..app import Services

REASONS = tuple(r.value for r in RevocationReason)


class Forbidden(AuthsvcError):
    code = "access_denied"
    status = 403


@dataclass
class RevokeResult:
    revoked: list[dict[str, str]] = field(default_factory=list)
    sessions_ended: int = 0
    tokens_revoked: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "revoked": self.revoked,
            "sessions_ended": self.sessions_ended,
            "tokens_revoked": self.tokens_revoked,
        }


def iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else None


class Helpdesk:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.clock = services.clock

    # --- who may act ------------------------------------------------------------------------------

    def roles(self, db: Session, account_id: uuid.UUID) -> set[str]:
        return set(db.scalars(select(StaffRole.role).where(StaffRole.account_id == account_id)))

    def grant(self, db: Session, number: str, role: str, *, actor: str) -> None:
        """``authsvc staff grant MATRICULE ROLE``."""
        if role not in (Role.HELPDESK, Role.ADMIN):
            raise InvalidInput("the role is helpdesk or admin")
        account = self._account(db, number)
        if db.get(StaffRole, (account.id, role)) is not None:
            return
        db.add(
            StaffRole(
                account_id=account.id, role=role, granted_at=self.clock.now(), granted_by=actor
            )
        )
        audit.record(
            db,
            EventTag.STAFF_GRANTED,
            actor=actor,
            subject=f"professional:{self._matricule(db, account)}",
            data={"role": role, "account_id": str(account.id)},
            clock=self.clock,
        )

    def staff_of_session(self, db: Session, cookie: str | None) -> tuple[ProviderSession, set[str]]:
        """The console's rule: a live *full* session of a member of staff (checked server-side)."""
        session = self.services.sessions.find(db, cookie)
        if session is None:
            raise Forbidden("Sign in with your smartcard to use the helpdesk console.", status=401)
        if acr_of(session, self.clock.now()) != "http://eidas.europa.eu/LoA/high":
            raise Forbidden("The helpdesk console needs a full session (smartcard).", status=401)
        roles = self.roles(db, session.account_id)
        if not roles & {Role.HELPDESK, Role.ADMIN}:
            # committed by the caller, which answers the refusal with a page
            audit.record(
                db,
                EventTag.HELPDESK_ACCESS_REFUSED,
                actor=f"account:{session.account_id}",
                data={"reason": "no helpdesk role"},
                clock=self.clock,
            )
            raise Forbidden("This account has no helpdesk role.")
        return session, roles

    def staff_of_token(self, db: Session, token: str | None) -> uuid.UUID:
        """The API's rule: a bearer access token with scope ``helpdesk``, issued from a full
        session of a member of staff, still active."""
        if not token:
            raise Forbidden("A bearer access token with scope helpdesk is needed.", status=401)
        active = self.services.tokens.active_access(db, token)
        if active is None:
            raise Forbidden("The access token is not valid.", status=401)
        claims, family = active
        if "helpdesk" not in str(claims.get("scope", "")).split():
            raise Forbidden("The access token does not carry the helpdesk scope.")
        if claims.get("acr") != "http://eidas.europa.eu/LoA/high":
            raise Forbidden("The access token was not issued from a full session (smartcard).")
        if family.account_id is None or not self.roles(db, family.account_id) & {
            Role.HELPDESK,
            Role.ADMIN,
        }:
            raise Forbidden("This account has no helpdesk role.")
        return family.account_id

    # --- finding ----------------------------------------------------------------------------------

    def _account(self, db: Session, number: str) -> Account:
        try:
            valid = matricules.validate(number)
        except matricules.InvalidMatricule as exc:
            raise InvalidInput(f"invalid matricule: {exc}") from None
        account = db.scalars(
            select(Account)
            .join(Professional, Professional.id == Account.professional_id)
            .where(Professional.matricule == valid)
        ).one_or_none()
        if account is None:
            raise NotFound(f"no account for matricule {valid}")
        return account

    def _matricule(self, db: Session, account: Account) -> str:
        return db.get_one(Professional, account.professional_id).matricule

    def _subject(self, db: Session, account: Account) -> str:
        """The audit subject of a professional: the stored 13 digits, never the matricule as the
        caller typed it (spaces, other characters), so that every event is found under it."""
        return f"professional:{self._matricule(db, account)}"

    def search(self, db: Session, query: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """Professionals by matricule (exact) or name (any part, accents and case as typed)."""
        text = " ".join(query.split())[:100]
        if not text:
            return []
        compact = text.replace(" ", "")
        stmt = select(Professional, Account.status).outerjoin(
            Account, Account.professional_id == Professional.id
        )
        if compact.isdigit():
            stmt = stmt.where(Professional.matricule == compact)
        else:
            for word in text.split():
                # the word as typed: % and _ match themselves, not any text
                pattern = "%" + _like_escape(word.lower()) + "%"
                stmt = stmt.where(
                    or_(
                        func.lower(Professional.given_name).like(pattern, escape="\\"),
                        func.lower(Professional.family_name).like(pattern, escape="\\"),
                    )
                )
        rows = db.execute(stmt.order_by(Professional.family_name).limit(limit)).all()
        return [
            {
                "matricule": p.matricule,
                "name": p.name,
                "profession": p.profession,
                "directory_status": p.status,
                "account_status": status,
            }
            for p, status in rows
        ]

    def detail(self, db: Session, number: str, *, viewer: str | None = None) -> dict[str, Any]:
        """Everything the helpdesk sees about one professional; a ``viewer`` (the member of staff
        reading it) is recorded in the audit trail, after the events shown."""
        try:
            valid = matricules.validate(number)
        except matricules.InvalidMatricule as exc:
            raise InvalidInput(f"invalid matricule: {exc}") from None
        professional = db.scalars(
            select(Professional).where(Professional.matricule == valid)
        ).one_or_none()
        if professional is None:
            raise NotFound(f"no professional with matricule {valid} in the directory")
        account = db.scalars(
            select(Account).where(Account.professional_id == professional.id)
        ).one_or_none()
        now = self.clock.now()
        out: dict[str, Any] = {
            "matricule": professional.matricule,
            "directory": {
                "given_name": professional.given_name,
                "family_name": professional.family_name,
                "profession": professional.profession,
                "provider_code": professional.provider_code,
                "status": professional.status,
                "left_at": iso(professional.left_at),
            },
            "account": None,
            "cards": [],
            "sessions": [],
            "letters": [],
            "events": [],
        }
        for letter in db.scalars(
            select(ActivationLetter)
            .where(ActivationLetter.professional_id == professional.id)
            .order_by(ActivationLetter.issued_at.desc())
            .limit(10)
        ):
            out["letters"].append(
                {
                    "letter_id": str(letter.id),
                    "issued_at": iso(letter.issued_at),
                    "expires_at": iso(letter.expires_at),
                    "state": letter.state(now).value,
                    "failed_attempts": letter.failed_attempts,
                }
            )
        subjects = [f"professional:{professional.matricule}"]
        if account is not None:
            subjects.append(f"account:{account.id}")
            out["account"] = {
                "account_id": str(account.id),
                "status": account.status,
                "email": account.email,
                "activated_at": iso(account.activated_at),
                "failed_logins": account.failed_logins,
                "roles": sorted(self.roles(db, account.id)),
            }
            for card in db.scalars(
                select(Card).where(Card.account_id == account.id).order_by(Card.bound_at.desc())
            ):
                out["cards"].append(
                    {
                        "card_id": str(card.id),
                        "serial": card.serial,
                        "issuer": card.issuer,
                        "subject": card.subject,
                        "status": card.status,
                        "bound_at": iso(card.bound_at),
                        "not_after": iso(card.not_after),
                        "revoked_at": iso(card.revoked_at),
                        "revoked_reason": card.revoked_reason,
                    }
                )
            for session in db.scalars(
                select(ProviderSession)
                .where(ProviderSession.account_id == account.id)
                .where(ProviderSession.ended_at.is_(None))
                .where(ProviderSession.expires_at > now)
                .order_by(ProviderSession.created_at.desc())
            ):
                clients = list(
                    db.scalars(
                        select(SessionClient.client_id).where(
                            SessionClient.session_id == session.id
                        )
                    )
                )
                out["sessions"].append(
                    {
                        "sid": session.id,
                        "created_at": iso(session.created_at),
                        "last_seen_at": iso(session.last_seen_at),
                        "level": "full" if acr_of(session, now).endswith("high") else "limited",
                        "amr": session.amr,
                        "card_id": str(session.card_id) if session.card_id else None,
                        "ip": session.ip,
                        "user_agent": session.user_agent,
                        "clients": clients,
                    }
                )
        out["events"] = [self._event(e) for e in self.events(db, subjects=subjects, limit=50)]
        if viewer is not None:
            audit.record(
                db,
                EventTag.HELPDESK_PROFESSIONAL_VIEWED,
                actor=viewer,
                subject=subjects[0],
                clock=self.clock,
            )
        return out

    def exported(self, db: Session, *, actor: str, filters: dict[str, Any], count: int) -> None:
        """Record an export of the audit trail: who, with which filters, how many events."""
        audit.record(
            db,
            EventTag.HELPDESK_AUDIT_EXPORTED,
            actor=actor,
            data={
                "filters": {
                    name: iso(value) if isinstance(value, datetime) else value
                    for name, value in filters.items()
                },
                "events": count,
            },
            clock=self.clock,
        )

    # --- actions ----------------------------------------------------------------------------------

    def revoke_cards(
        self,
        db: Session,
        number: str,
        *,
        reason: str,
        actor: str,
        card_id: uuid.UUID | None = None,
    ) -> RevokeResult:
        """Revoke every active card of the account (or one of them), at once and atomically."""
        if reason not in REASONS:
            raise InvalidInput(f"the reason is one of {', '.join(REASONS)}")
        account = self._account(db, number)
        subject = self._subject(db, account)
        now = self.clock.now()
        stmt = (
            select(Card)
            .where(Card.account_id == account.id)
            .where(Card.status == CardStatus.ACTIVE)
            .with_for_update()
        )
        if card_id is not None:
            stmt = stmt.where(Card.id == card_id)
        result = RevokeResult()
        cards = list(db.scalars(stmt.order_by(Card.bound_at)))
        if card_id is not None and not cards:
            raise NotFound("this account has no such active card")
        for card in cards:
            card.status = CardStatus.REVOKED
            card.revoked_at = now
            card.revoked_reason = reason
            put_on_helpdesk_list(
                db,
                issuer=card.issuer,
                serial=card.serial,
                reason=reason,
                actor=actor,
                clock=self.clock,
                subject=subject,
            )
            result.revoked.append(
                {"card_id": str(card.id), "serial": card.serial, "issuer": card.issuer}
            )
        if cards:
            ids = [card.id for card in cards]
            sessions = db.scalars(
                select(ProviderSession)
                .where(ProviderSession.card_id.in_(ids))
                .where(ProviderSession.ended_at.is_(None))
                .with_for_update()
            ).all()
            for session in sessions:
                result.tokens_revoked += self.services.sessions.end(
                    db, session, f"card revoked ({reason})", actor=actor
                )
                result.sessions_ended += 1
        audit.record(
            db,
            EventTag.HELPDESK_CARD_REVOKED,
            actor=actor,
            subject=subject,
            data={"reason": reason, **result.to_dict()},
            clock=self.clock,
        )
        return result

    def end_sessions(
        self, db: Session, number: str, *, actor: str, reason: str = "helpdesk"
    ) -> int:
        account = self._account(db, number)
        sessions = db.scalars(
            select(ProviderSession)
            .where(ProviderSession.account_id == account.id)
            .where(ProviderSession.ended_at.is_(None))
            .with_for_update()
        ).all()
        for session in sessions:
            self.services.sessions.end(db, session, reason, actor=actor)
        audit.record(
            db,
            EventTag.HELPDESK_SESSIONS_ENDED,
            actor=actor,
            subject=self._subject(db, account),
            data={"sessions_ended": len(sessions)},
            clock=self.clock,
        )
        return len(sessions)

    def lock(self, db: Session, number: str, *, actor: str, note: str = "") -> None:
        account = self._account(db, number)
        if account.status != AccountStatus.ACTIVE:
            raise InvalidInput(
                f"only an active account can be locked (this one is {account.status})"
            )
        account.status = AccountStatus.LOCKED
        account.status_changed_at = self.clock.now()
        audit.record(
            db,
            EventTag.HELPDESK_ACCOUNT_LOCKED,
            actor=actor,
            subject=self._subject(db, account),
            data={"note": note[:500]},
            clock=self.clock,
        )
        self.end_sessions(db, number, actor=actor, reason="account locked")

    def unlock(self, db: Session, number: str, *, actor: str, note: str = "") -> None:
        account = self._account(db, number)
        if account.status != AccountStatus.LOCKED:
            raise InvalidInput(f"the account is not locked (it is {account.status})")
        account.status = AccountStatus.ACTIVE
        account.status_changed_at = self.clock.now()
        account.failed_logins = 0
        self.services.login_failures.clear(self._matricule(db, account))
        audit.record(
            db,
            EventTag.HELPDESK_ACCOUNT_UNLOCKED,
            actor=actor,
            subject=self._subject(db, account),
            data={"note": note[:500]},
            clock=self.clock,
        )

    def issue_letter(self, db: Session, number: str, *, actor: str) -> letters.IssuedLetter:
        """A new activation letter: for a lost card (re-activation binds the new one) and for a
        forgotten password alike."""
        return letters.issue(db, number, hasher=self.services.hasher, actor=actor, clock=self.clock)

    # --- the audit trail --------------------------------------------------------------------------

    def events(
        self,
        db: Session,
        *,
        subjects: Sequence[str] = (),
        tag: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 200,
    ) -> list[AuditEvent]:
        # newest first across the chains: ids follow the order of the appends
        stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(min(limit, 10000))
        if subjects:
            stmt = stmt.where(AuditEvent.subject.in_(list(subjects)))
        if tag:
            stmt = stmt.where(AuditEvent.tag.like(f"{tag}%"))
        if actor:
            stmt = stmt.where(AuditEvent.actor == actor)
        if since:
            stmt = stmt.where(AuditEvent.occurred_at >= since)
        if until:
            stmt = stmt.where(AuditEvent.occurred_at < until)
        return list(db.scalars(stmt))

    @staticmethod
    def _event(event: AuditEvent) -> dict[str, Any]:
        return {
            "seq": event.seq,
            "chain": event.chain,
            "at": iso(event.occurred_at),
            "tag": event.tag,
            "actor": event.actor,
            "subject": event.subject,
            "data": event.data,
        }

    def events_json(self, events: Iterable[AuditEvent]) -> list[dict[str, Any]]:
        return [self._event(e) for e in events]

    @staticmethod
    def events_csv(events: Iterable[AuditEvent]) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["seq", "occurred_at", "tag", "actor", "subject", "data", "chain"])
        for e in events:
            data = json.dumps(e.data, ensure_ascii=False, sort_keys=True)
            row = [str(e.seq), iso(e.occurred_at) or "", e.tag, e.actor, e.subject or "", data]
            row.append(str(e.chain))
            # spreadsheet formula injection (OWASP "CSV Injection"): a cell may not start with
            # = + - @ or a tab or carriage return
            writer.writerow(["'" + c if c[:1] in FORMULA_STARTS else c for c in row])
        return out.getvalue()


#: first characters that make a spreadsheet read a CSV cell as a formula
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
