"""Signing in (INTERFACE §4 "Sign-in"): with the password (limited) or the smartcard (full).

The authorization endpoint, when the browser has no suitable session, stores the authorization
request in a :class:`~authsvc.login.models.LoginFlow` and sends the browser to
``/login?flow={id}``. The person authenticates there; the flow then hands back ``redirect_to``,
the authorization request again, which now finds the session.

SECURITY "Guessing and enumeration": unknown matricules, wrong passwords and accounts that are not
active get the same answer (``invalid_credentials``) after the same work (an Argon2 verification,
against a dummy hash when there is no account). Failures are limited per matricule (whether it
exists or not, so that the limit itself tells nothing) with a back-off that grows, per IP by the
web layer, and an account locks after :data:`LOCK_AFTER` consecutive failures (the helpdesk
unlocks it).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

from sqlalchemy import Connection, Row, Table, bindparam, select, true, update
from sqlalchemy.orm import Session

from .. import matricule as matricules
from ..accounts.models import Account, AccountStatus
from ..audit import service as audit
from ..audit.tags import EventTag
from ..cards.models import Card, CardStatus
from ..directory.models import Professional
from ..errors import FlowError
from ..metrics import sign_in, sign_in_failed
from ..oidc.claims import ACR_HIGH, AMR_CARD, AMR_PASSWORD
from ..pki.challenges import Challenge, issue_challenge
from ..pki.errors import CardRefused
from ..security.secrets import Purpose, random_token
from ..security.secrets import equal as secrets_equal
from ..sessions.service import Opened
from .models import LoginFlow

if TYPE_CHECKING:
    from ..app import Services

log = logging.getLogger("authsvc.login")

FLOW_LIFETIME = timedelta(minutes=15)
#: the client id of sign-ins for the provider's own pages (no relying service is involved)
INTERNAL_CLIENT = "authsvc:pages"
#: consecutive wrong passwords after which an account is locked (the helpdesk unlocks it)
LOCK_AFTER = 10
#: per matricule: after FREE_TRIES failures, wait 2^(n - FREE_TRIES) seconds (at most an hour)
FREE_TRIES = 3
MAX_BACKOFF = 3600

#: a flow as :data:`_FLOW_AND_ACCOUNT` reads it (the checks take it or a :class:`LoginFlow`)
_FlowRow = Row[*tuple[Any, ...]]
_FLOWS = cast(Table, LoginFlow.__table__)
_ACCOUNTS = cast(Table, Account.__table__)
_PROFESSIONALS = cast(Table, Professional.__table__)
_ACCOUNT_OF = (
    select(_ACCOUNTS.c.id.label("account_id"), _ACCOUNTS.c.password_hash)
    .join_from(_ACCOUNTS, _PROFESSIONALS, _PROFESSIONALS.c.id == _ACCOUNTS.c.professional_id)
    .where(_PROFESSIONALS.c.matricule == bindparam("matricule"))
    .subquery()
)
#: what a password sign-in reads before Argon2, in one statement: the columns of its flow that
#: :meth:`Login._check` and it need, and the id and hash of the matricule's account (NULL if none)
_FLOW_AND_ACCOUNT = (
    select(
        _FLOWS.c.binding_hash,
        _FLOWS.c.csrf_token,
        _FLOWS.c.client_id,
        _FLOWS.c.request,
        _FLOWS.c.required_acr,
        _FLOWS.c.completed_at,
        _FLOWS.c.expires_at,
        _ACCOUNT_OF.c.account_id,
        _ACCOUNT_OF.c.password_hash,
    )
    .select_from(_FLOWS.outerjoin(_ACCOUNT_OF, true()))
    .where(_FLOWS.c.id == bindparam("flow_id"))
)
_FLOW_IS_OPEN = (_FLOWS.c.completed_at.is_(None), _FLOWS.c.expires_at > bindparam("now"))
#: the flow, if still open (not used up, not expired)
_FLOW_OPEN = select(_FLOWS.c.id).where(_FLOWS.c.id == bindparam("flow_id"), *_FLOW_IS_OPEN)
#: the flow marked authenticated (at ``now``, by ``by_account``), if still open
_MARK_AUTHENTICATED = (
    update(_FLOWS)
    .where(_FLOWS.c.id == bindparam("flow_id"), *_FLOW_IS_OPEN)
    .values(authenticated_at=bindparam("now"), account_id=bindparam("by_account"))
)
#: the same, for a flow that ends with the sign-in (:meth:`Login.redirect_to`)
_MARK_AUTHENTICATED_AND_USED = _MARK_AUTHENTICATED.values(completed_at=bindparam("now"))
#: a right password for an active account: its count of wrong passwords starts again (the row
#: stays locked until the commit, as with SELECT … FOR UPDATE); no row if it is not active
_SIGNED_IN = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("account_id"), _ACCOUNTS.c.status == AccountStatus.ACTIVE)
    .values(failed_logins=0)
    .returning(_ACCOUNTS.c.password_hash)
)


class LoginError(FlowError):
    """An error of the login API (INTERFACE §4)."""


def invalid_credentials() -> LoginError:
    return LoginError("invalid_credentials", "The matricule or the password is not right.")


def flow_expired() -> LoginError:
    return LoginError(
        "flow_expired",
        "This sign-in has expired; go back to the service and sign in again.",
        status=410,
    )


def _plausible(flow_id: object) -> bool:
    return isinstance(flow_id, str) and len(flow_id) <= 64


@dataclass(frozen=True)
class Started:
    flow: LoginFlow
    binding: str


@dataclass(frozen=True)
class SignedIn:
    redirect_to: str
    opened: Opened


class Login:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.clock = services.clock
        self.hasher = services.hasher

    # --- the flow ---

    def start(
        self,
        db: Session,
        *,
        client_id: str,
        request: Mapping[str, str],
        required_acr: str,
        login_hint: str | None,
        lang: str,
    ) -> Started:
        now = self.clock.now()
        binding = random_token(32)
        flow = LoginFlow(
            id=random_token(32),
            binding_hash=self.hasher.hash(Purpose.FLOW_BINDING, binding),
            csrf_token=random_token(24),
            client_id=client_id,
            request=dict(request),
            required_acr=required_acr,
            login_hint=login_hint,
            lang=lang,
            created_at=now,
            expires_at=now + FLOW_LIFETIME,
        )
        db.add(flow)
        return Started(flow, binding)

    def load(self, db: Session, flow_id: str, binding: str | None) -> LoginFlow:
        flow = db.get(LoginFlow, flow_id) if _plausible(flow_id) else None
        self._check(flow, binding)
        assert flow is not None
        return flow

    def checked(self, db: Session, flow_id: str, binding: str | None, csrf: Any) -> LoginFlow:
        flow = self.load(db, flow_id, binding)
        self._check_csrf(flow, csrf)
        return flow

    def _check(self, flow: LoginFlow | _FlowRow | None, binding: str | None) -> None:
        """Refuse a flow (a :class:`LoginFlow`, or a row of its columns) that is missing, was not
        started in this browser, is used up or has expired."""
        if (
            flow is None
            or not binding
            or not self.hasher.verify(Purpose.FLOW_BINDING, binding, flow.binding_hash)
        ):
            raise LoginError(
                "flow_not_found", "No sign-in with this id was started in this browser.", status=404
            )
        if flow.completed_at is not None or self.clock.now() >= flow.expires_at:
            raise flow_expired()

    @staticmethod
    def _check_csrf(flow: LoginFlow | _FlowRow, csrf: Any) -> None:
        if not isinstance(csrf, str) or not secrets_equal(csrf, flow.csrf_token):
            raise LoginError(
                "invalid_csrf_token",
                "The request's csrf_token does not match the flow.",
                status=403,
            )

    @staticmethod
    def methods(flow: LoginFlow | _FlowRow) -> list[str]:
        return ["smartcard"] if flow.required_acr == ACR_HIGH else ["password", "smartcard"]

    def challenge(self, flow_id: str) -> Challenge:
        with self.services.db.transaction() as db:
            return issue_challenge(db, flow_id, self.services.settings.issuer_origin, self.clock)

    def start_for_page(
        self, db: Session, *, return_to: str, required_acr: str, lang: str
    ) -> Started:
        """A sign-in for one of the provider's own pages (the helpdesk console, the account
        pages): afterwards the browser goes back to ``return_to`` (a path on this provider)."""
        if not return_to.startswith("/") or return_to.startswith("//"):
            raise ValueError("return_to is a path on this provider")
        return self.start(
            db,
            client_id=INTERNAL_CLIENT,
            request={"return_to": return_to},
            required_acr=required_acr,
            login_hint=None,
            lang=lang,
        )

    def redirect_to(self, flow: LoginFlow) -> str:
        """Where the browser goes once authenticated; a sign-in for one of the provider's own
        pages needs no authorization request, so its flow is used up now."""
        if flow.client_id == INTERNAL_CLIENT:
            flow.completed_at = self.clock.now()
        return self._continue_at(flow.id, flow.client_id, flow.request)

    def _continue_at(self, flow_id: str, client_id: str, request: Mapping[str, str]) -> str:
        if client_id == INTERNAL_CLIENT:
            return f"{self.services.settings.issuer}{request['return_to']}"
        params = {**request, "login_flow": flow_id}
        return f"{self.services.settings.issuer}/authorize?{urlencode(params)}"

    # --- the password ---

    def password(
        self,
        flow_id: str,
        binding: str | None,
        csrf: Any,
        typed_matricule: str,
        password: str,
        *,
        previous_cookie: str | None,
        ip: str | None,
        user_agent: str | None,
    ) -> SignedIn:
        """A password sign-in: two units of work around the Argon2id verification.

        Before it, one read-only unit of work (no write lock) reads the flow and the account in
        one statement; then the flow is checked, and the matricule's throttle. After it, one write
        transaction locks the account row (so that concurrent wrong passwords count one by one),
        and either counts the failure or opens the session and marks the flow authenticated with
        an ``UPDATE`` guarded by the flow's state: a flow used up or expired meanwhile changes no
        row and is refused. The flow's binding and CSRF token never change, so they are checked
        once. A sign-in that succeeds is the hot path (``bench/signin.py``): everything but Argon2
        must cost little, so its statements are prebuilt Core ones, with no ORM unit of work.
        """
        try:
            number = matricules.validate(typed_matricule)
        except matricules.InvalidMatricule:
            number = typed_matricule.strip()[:32]
        with self.services.db.read_transaction(snapshot=False) as db:  # one statement
            # Core statements on the connection: no ORM object, nothing to flush
            flow = (
                db.connection()
                .execute(_FLOW_AND_ACCOUNT, {"flow_id": flow_id, "matricule": number})
                .one_or_none()
                if _plausible(flow_id)
                else None
            )
        self._check(flow, binding)
        assert flow is not None
        self._check_csrf(flow, csrf)
        if "password" not in self.methods(flow):
            raise LoginError(
                "method_not_allowed",
                "This service needs a full session: sign in with your smartcard.",
            )
        wait = self.services.login_failures.wait(number)
        if wait:
            raise LoginError(
                "too_many_requests",
                "Too many wrong tries for this matricule: wait before trying again.",
                status=429,
                retry_after=wait,
            )
        account_id: uuid.UUID | None = flow.account_id
        # the same Argon2 work for an unknown matricule (dummy hash) as for a wrong password
        ok = self.services.passwords.verify(flow.password_hash, password)
        result: SignedIn | None = None
        account: Account | None = None  # of a refusal
        with self.services.db.transaction() as db, audit.batch(db):
            # the account row locked (by the UPDATE, or below): the sign-ins and failures of one
            # account go one at a time, and concurrent wrong passwords are counted one by one
            conn = db.connection()  # Core statements, before any ORM work in this transaction
            signed_in = (
                conn.execute(_SIGNED_IN, {"account_id": account_id}).one_or_none()
                if ok and account_id is not None
                else None
            )
            if signed_in is not None and account_id is not None:
                self._authenticated(conn, flow_id, flow.client_id, account_id)
                if self.services.passwords.needs_rehash(signed_in.password_hash or ""):
                    conn.execute(
                        update(_ACCOUNTS).where(_ACCOUNTS.c.id == account_id),
                        {"password_hash": self.services.passwords.hash(password)},
                    )
                previous = self.services.sessions.find(db, previous_cookie, touch=False)
                opened = self.services.sessions.sign_in(
                    db,
                    account_id,
                    amr=AMR_PASSWORD,
                    previous=previous,
                    user_agent=user_agent,
                    ip=ip,
                )
                audit.record(
                    db,
                    EventTag.LOGIN_SUCCEEDED,
                    actor=f"account:{account_id}",
                    subject=f"professional:{number}",
                    data={"method": "password", "client_id": flow.client_id, "ip": ip},
                    clock=self.clock,
                )
                result = SignedIn(self._continue_at(flow_id, flow.client_id, flow.request), opened)
            else:
                open_ = conn.execute(_FLOW_OPEN, {"flow_id": flow_id, "now": self.clock.now()})
                if open_.first() is None:
                    raise flow_expired()
                # the account row locked now, its failure counted on it
                account = db.get(Account, account_id, with_for_update=True) if account_id else None
                self._failed(
                    db, number, account, ip, reason="wrong password" if not ok else "inactive"
                )
        if result is None:
            self.services.login_failures.hit(number)
            sign_in_failed("password", account)
            raise invalid_credentials()
        sign_in("password", "success")
        return result

    def _authenticated(
        self, conn: Connection, flow_id: str, client_id: str, account_id: uuid.UUID
    ) -> None:
        """Mark the flow authenticated by this account, if it is still open (not used up, not
        expired; :meth:`redirect_to`'s rule: a flow for the provider's own pages is used up now);
        raise ``flow_expired`` otherwise."""
        statement = (
            _MARK_AUTHENTICATED_AND_USED if client_id == INTERNAL_CLIENT else _MARK_AUTHENTICATED
        )
        params = {"flow_id": flow_id, "now": self.clock.now(), "by_account": account_id}
        marked = conn.execute(statement, params)
        if marked.rowcount != 1:
            raise flow_expired()

    def _failed(
        self, db: Session, number: str, account: Account | None, ip: str | None, *, reason: str
    ) -> None:
        now = self.clock.now()
        data: dict[str, Any] = {"method": "password", "ip": ip, "known": account is not None}
        if account is not None and reason == "wrong password":
            account.failed_logins += 1
            account.last_failed_login_at = now
            data["failed_logins"] = account.failed_logins
            if account.failed_logins >= LOCK_AFTER and account.status == AccountStatus.ACTIVE:
                account.status = AccountStatus.LOCKED
                account.status_changed_at = now
                audit.record(
                    db,
                    EventTag.ACCOUNT_LOCKED,
                    actor="system",
                    subject=f"professional:{number}",
                    data={"account_id": str(account.id), "reason": f"{LOCK_AFTER} wrong passwords"},
                    clock=self.clock,
                )
        elif account is not None:
            data["status"] = account.status
        audit.record(
            db,
            EventTag.LOGIN_FAILED,
            actor=f"ip:{ip or '-'}",
            subject=f"professional:{number}",
            data=data,
            clock=self.clock,
        )

    # --- the smartcard ---

    def smartcard(
        self,
        flow_id: str,
        binding: str | None,
        csrf: Any,
        auth_token: Mapping[str, Any],
        *,
        previous_cookie: str | None,
        ip: str | None,
        user_agent: str | None,
    ) -> SignedIn:
        with self.services.db.transaction() as db:
            self.checked(db, flow_id, binding, csrf)
        try:
            card = self.services.smartcard.verifier.verify(self.services.db, flow_id, auth_token)
        except CardRefused as exc:
            with self.services.db.transaction() as db:
                audit.record(
                    db,
                    EventTag.LOGIN_FAILED,
                    actor=f"ip:{ip or '-'}",
                    subject=None,
                    data={"method": "smartcard", "reason": exc.reason, "ip": ip},
                    clock=self.clock,
                )
            sign_in("smartcard", "failure")
            raise
        with self.services.db.transaction() as db, audit.batch(db):
            flow = self.checked(db, flow_id, binding, csrf)
            bound = db.scalars(
                select(Card)
                .where(Card.issuer == card.issuer)
                .where(Card.serial == card.serial)
                .with_for_update()
            ).one_or_none()
            account = db.get(Account, bound.account_id) if bound is not None else None
            refusal: str | None = None
            if bound is None or bound.fingerprint != card.fingerprint:
                refusal = (
                    "This card is not bound to an account: activate your account with it first."
                )
            elif bound.status != CardStatus.ACTIVE:
                refusal = "This card was revoked."
            elif account is None or account.status != AccountStatus.ACTIVE:
                refusal = "The account of this card is not active."
            if refusal is not None:
                audit.record(
                    db,
                    EventTag.LOGIN_FAILED,
                    actor=f"ip:{ip or '-'}",
                    subject=f"account:{bound.account_id}" if bound else None,
                    data={"method": "smartcard", "reason": refusal, "serial": card.serial},
                    clock=self.clock,
                )
            else:
                assert account is not None
                assert bound is not None
                previous = self.services.sessions.find(db, previous_cookie, touch=False)
                opened = self.services.sessions.sign_in(
                    db,
                    account.id,
                    amr=AMR_CARD,
                    card_id=bound.id,
                    previous=previous,
                    user_agent=user_agent,
                    ip=ip,
                )
                flow.authenticated_at = self.clock.now()
                flow.account_id = account.id
                audit.record(
                    db,
                    EventTag.LOGIN_SUCCEEDED,
                    actor=f"account:{account.id}",
                    subject=f"account:{account.id}",
                    data={
                        "method": "smartcard",
                        "client_id": flow.client_id,
                        "card": str(bound.id),
                        "ip": ip,
                    },
                    clock=self.clock,
                )
                result = SignedIn(self.redirect_to(flow), opened)
        if refusal is not None:
            sign_in_failed("smartcard", account)
            raise LoginError("invalid_card", refusal)
        sign_in("smartcard", "success")
        return result

    def complete(
        self, db: Session, flow_id: str, binding: str | None, client_id: str
    ) -> uuid.UUID | None:
        """The authorization endpoint resumes: the flow, if authenticated, is used up."""
        try:
            flow = self.load(db, flow_id, binding)
        except LoginError:
            return None
        if flow.client_id != client_id or flow.authenticated_at is None:
            return None
        flow.completed_at = self.clock.now()
        return flow.account_id
