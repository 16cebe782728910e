"""The activation journey (PRODUCT "The activation journey", INTERFACE §4 "Activation").

letter code + matricule → email → code from the email → password → smartcard → active.

Each step is one method; each method checks the flow (the browser's binding cookie, the CSRF token,
expiry) and asks :data:`~authsvc.activation.states.TRANSITIONS` whether the step is allowed before
doing anything. Counters that limit guessing (wrong letter codes, wrong email codes) are committed
*before* the error is returned, so that an attacker cannot reset them by making the request fail.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import matricule as matricules
from ..accounts.models import Account, AccountStatus
from ..audit import service as audit
from ..audit.tags import EventTag
from ..cards.models import Card, CardStatus
from ..clock import Clock
from ..db import Database
from ..directory.models import Professional
from ..errors import AuthsvcError, FlowError
from ..mail import messages
from ..outbox.service import Sealer, enqueue
from ..pki.certificates import ValidatedCertificate
from ..pki.challenges import Challenge
from ..security.passwords import PasswordHasher, WeakPassword, check_policy
from ..security.secrets import KeyedHasher, Purpose, random_digits, random_token
from ..security.secrets import equal as secrets_equal
from ..security.throttle import FailureThrottle
from . import letters
from .flows import ActivationFlow
from .holder import holder_matches
from .models import MAX_FAILED_ATTEMPTS, ActivationLetter
from .states import Event, State, next_state

log = logging.getLogger("authsvc.activation")

FLOW_LIFETIME = timedelta(hours=1)
EMAIL_CODE_LIFETIME = timedelta(minutes=10)
EMAIL_CODE_MAX_ATTEMPTS = 5
EMAIL_RESEND_INTERVAL = timedelta(seconds=30)
EMAIL_MAX_SENDS = 5


class ActivationError(FlowError):
    """An error of the activation API (INTERFACE §4): ``error`` code, HTTP status, description."""


def invalid_activation() -> ActivationError:
    # One answer for every wrong, unknown, expired, used, superseded or locked pair:
    # it tells nothing about which matricules exist.
    return ActivationError(
        "invalid_activation",
        "This activation code and matricule do not match a valid activation letter.",
    )


def cannot_complete(reason: str, sentence: str) -> ActivationError:
    """The flow cannot end in an active account any more (the directory or the helpdesk said no)."""
    return ActivationError("invalid_activation", sentence, status=409, reason=reason)


def card_refused(reason: str, sentence: str) -> ActivationError:
    """``400 invalid_card`` with the reason in the description, as the card checks give it."""
    return ActivationError("invalid_card", f"{sentence} (reason: {reason})", reason=reason)


#: ``(flow_id) -> Challenge``: issues a new challenge for the flow, in its own transaction.
IssueChallenge = Callable[[str], Challenge]
#: ``(flow_id, auth_token) -> ValidatedCertificate``: consumes the flow's challenge (committed, so
#: it is
#: single-use even when the check fails) and checks the token and certificate, or raises an
#: :class:`AuthsvcError` with code ``invalid_card``.
CheckCard = Callable[[str, Mapping[str, Any]], ValidatedCertificate]


@dataclass
class Started:
    flow: ActivationFlow
    binding: str  # the cookie value, given once to the browser


class ActivationService:
    def __init__(
        self,
        *,
        db: Database,
        hasher: KeyedHasher,
        passwords: PasswordHasher,
        sealer: Sealer,
        clock: Clock,
        issue_challenge: IssueChallenge,
        check_card: CheckCard,
        on_commit_mail: Callable[[], None] = lambda: None,
        failures: FailureThrottle | None = None,
    ) -> None:
        self.db = db
        #: refused starts per matricule, in the limits' storage (shared between instances)
        self.failures = failures
        #: what a typed code is checked against when there is no letter: the same work
        self._no_letter_hash = hasher.hash(Purpose.ACTIVATION_CODE, random_token(16))
        self.hasher = hasher
        self.passwords = passwords
        self.sealer = sealer
        self.clock = clock
        self.issue_challenge = issue_challenge
        self.check_card = check_card
        self.on_commit_mail = on_commit_mail

    # --- start: letter code + matricule ----------------------------------------------------------

    def start(self, activation_code: str, matricule: str, *, lang: str, ip: str | None) -> Started:
        """Check the letter; open a flow. Every failure is the same ``invalid_activation``.

        Every refusal costs the same work, so that the time of the answer does not tell which
        matricules have an open letter either: the letter is looked up (even for a malformed
        matricule), the typed code is checked against its hash or a dummy one (with every key of
        :class:`KeyedHasher`: the current secret and its fallbacks), an audit event is written and
        committed, and the refusal is counted against the matricule in the limits' storage. Past
        a few refusals a matricule is answered ``429`` (``Retry-After``) before any of this.
        """
        code = letters.normalize_code(activation_code)
        try:
            number: str | None = matricules.validate(matricule)
        except matricules.InvalidMatricule:
            number = None
        throttle_key = number or matricule
        wait = self.failures.wait(throttle_key) if self.failures is not None else 0
        if wait:
            log.info(
                "activation start for %s held back %d s", self.hasher.pseudonym(throttle_key), wait
            )
            raise ActivationError(
                "too_many_requests",
                "Too many attempts for this matricule; wait before trying again.",
                status=429,
                retry_after=wait,
            )
        now = self.clock.now()
        failure: str | None = None
        started: Started | None = None
        with self.db.transaction() as session:
            # A malformed matricule is looked up too (it matches nothing): the same query.
            letter, account = self._open_letter(session, number or "")
            if letter is not None:
                matches = letters.code_matches(letter, code, self.hasher)
            else:
                self.hasher.verify(Purpose.ACTIVATION_CODE, code, self._no_letter_hash)
                matches = False
            if letter is None or account is None:
                failure = "no_usable_letter" if number else "malformed_matricule"
            elif not letter.is_usable(now):
                failure = f"letter_{letter.state(now)}"
            elif not matches:
                letter.failed_attempts += 1
                failure = "wrong_code"
                audit.record(
                    session,
                    EventTag.ACTIVATION_CODE_WRONG,
                    actor=f"ip:{ip or '-'}",
                    subject=f"professional:{number}",
                    data={"letter_id": str(letter.id), "failed_attempts": letter.failed_attempts},
                    clock=self.clock,
                )
                if letter.failed_attempts >= MAX_FAILED_ATTEMPTS:
                    audit.record(
                        session,
                        EventTag.LETTER_LOCKED,
                        actor="system",
                        subject=f"professional:{number}",
                        data={"letter_id": str(letter.id)},
                        clock=self.clock,
                    )
            else:
                binding = random_token(32)
                flow = ActivationFlow(
                    id=random_token(32),
                    letter_id=letter.id,
                    account_id=account.id,
                    state=State.EMAIL_REQUIRED,
                    binding_hash=self.hasher.hash(Purpose.FLOW_BINDING, binding),
                    csrf_token=random_token(24),
                    lang=lang,
                    email_code_attempts=0,
                    email_codes_sent=0,
                    created_at=now,
                    updated_at=now,
                    expires_at=min(now + FLOW_LIFETIME, letter.expires_at),
                )
                session.add(flow)
                audit.record(
                    session,
                    EventTag.ACTIVATION_STARTED,
                    actor=f"account:{account.id}",
                    subject=f"professional:{number}",
                    data={"flow": flow.id[:8], "letter_id": str(letter.id), "ip": ip},
                    clock=self.clock,
                )
                started = Started(flow, binding)
            if failure is not None and failure != "wrong_code":
                # the same write, and the same commit, as a wrong code on a live letter
                audit.record(
                    session,
                    EventTag.ACTIVATION_START_REFUSED,
                    actor=f"ip:{ip or '-'}",
                    subject=f"professional:{number}" if number else None,
                    data={"reason": failure},
                    clock=self.clock,
                )
        if self.failures is not None:
            if started is None:
                self.failures.hit(throttle_key)
            else:
                self.failures.clear(throttle_key)
        if started is None:
            who = self.hasher.pseudonym(number) if number else "a malformed matricule"
            log.info("activation refused for %s: %s", who, failure)
            raise invalid_activation()
        return started

    def _open_letter(
        self, session: Session, number: str
    ) -> tuple[ActivationLetter | None, Account | None]:
        row = session.execute(
            select(ActivationLetter, Account)
            .join(Professional, Professional.id == ActivationLetter.professional_id)
            .join(Account, Account.professional_id == Professional.id)
            .where(Professional.matricule == number)
            # a professional who left cannot activate; one listed again can (re-activation lifts
            # the suspension their departure caused)
            .where(Professional.status == "listed")
            .where(ActivationLetter.used_at.is_(None))
            .where(ActivationLetter.superseded_at.is_(None))
            .with_for_update(of=ActivationLetter)
        ).one_or_none()
        return (row[0], row[1]) if row else (None, None)

    # --- the flow, as the browser that started it sees it ----------------------------------------

    def load(
        self, session: Session, flow_id: str, binding: str | None, *, lock: bool = False
    ) -> ActivationFlow:
        """The flow, if it exists, belongs to this browser and has not expired."""
        stmt = select(ActivationFlow).where(ActivationFlow.id == flow_id)
        if lock:
            stmt = stmt.with_for_update()
        flow = session.scalars(stmt).one_or_none() if isinstance(flow_id, str) else None
        if (
            flow is None
            or not binding
            or not self.hasher.verify(Purpose.FLOW_BINDING, binding, flow.binding_hash)
        ):
            raise ActivationError(
                "flow_not_found",
                "No activation with this id was started in this browser.",
                status=404,
            )
        if flow.state != State.ACTIVE and self.clock.now() >= flow.expires_at:
            raise ActivationError(
                "flow_expired",
                "This activation has expired; start again with your letter.",
                status=410,
            )
        return flow

    def _step(
        self, session: Session, flow_id: str, binding: str | None, csrf: Any, event: Event
    ) -> tuple[ActivationFlow, State]:
        flow = self.load(session, flow_id, binding, lock=True)
        if not isinstance(csrf, str) or not secrets_equal(csrf, flow.csrf_token):
            raise ActivationError(
                "invalid_csrf_token",
                "The request's csrf_token does not match the flow.",
                status=403,
            )
        target = next_state(State(flow.state), event)
        if target is None:
            raise ActivationError(
                "invalid_state",
                f"This step is not possible now: the activation is at {flow.state}.",
                status=409,
            )
        return flow, target

    def view(self, flow_id: str, binding: str | None) -> tuple[ActivationFlow, Challenge | None]:
        """The flow's state; at the smartcard step, with a challenge ready to be signed."""
        with self.db.transaction() as session:
            flow = self.load(session, flow_id, binding)
        challenge = None
        if flow.state == State.SMARTCARD_REQUIRED:
            challenge = self.issue_challenge(flow.id)
        return flow, challenge

    def professional(self, flow: ActivationFlow) -> Professional:
        with self.db.transaction() as session:
            account = session.get(Account, flow.account_id)
            assert account is not None
            return session.get_one(Professional, account.professional_id)

    # --- email -----------------------------------------------------------------------------------

    def submit_email(
        self, flow_id: str, binding: str | None, csrf: Any, email: str
    ) -> ActivationFlow:
        try:
            # no SMTPUTF8: an address that needs it could not be delivered by every server
            address = validate_email(
                email, check_deliverability=False, allow_smtputf8=False
            ).normalized
        except EmailNotValidError as exc:
            raise ActivationError("invalid_email", f"Not a valid email address: {exc}") from None
        now = self.clock.now()
        with self.db.transaction() as session:
            flow, target = self._step(session, flow_id, binding, csrf, Event.EMAIL)
            if flow.email_code_sent_at is not None:
                wait = flow.email_code_sent_at + EMAIL_RESEND_INTERVAL - now
                if wait > timedelta(0):
                    raise ActivationError(
                        "too_many_requests",
                        "A code was sent a moment ago; wait before asking for another.",
                        status=429,
                        retry_after=max(1, int(wait.total_seconds() + 0.999)),
                    )
            if flow.email_codes_sent >= EMAIL_MAX_SENDS:
                raise ActivationError(
                    "too_many_requests",
                    "Too many codes were sent for this activation; start again with your letter.",
                    status=429,
                    retry_after=int((flow.expires_at - now).total_seconds()) + 1,
                )
            code = random_digits(6)
            flow.email = address
            flow.email_code_hash = self.hasher.hash(Purpose.EMAIL_CODE, f"{flow.id}:{code}")
            flow.email_code_expires_at = now + EMAIL_CODE_LIFETIME
            flow.email_code_attempts = 0
            flow.email_code_sent_at = now
            flow.email_codes_sent += 1
            flow.state = target
            flow.updated_at = now
            account = session.get_one(Account, flow.account_id)
            professional = session.get_one(Professional, account.professional_id)
            enqueue(
                session,
                "mail",
                messages.verification_code(
                    to=address, name=professional.name, code=code, lang=flow.lang
                ),
                summary=f"verification code to {address}",
                sealer=self.sealer,
                clock=self.clock,
                # the code is useless once expired: the mail is abandoned then, not retried
                expires_at=flow.email_code_expires_at,
            )
            audit.record(
                session,
                EventTag.ACTIVATION_EMAIL_CODE_SENT,
                actor=f"account:{account.id}",
                subject=f"professional:{professional.matricule}",
                data={"flow": flow.id[:8], "email": address, "sent": flow.email_codes_sent},
                clock=self.clock,
            )
        self.on_commit_mail()
        return flow

    def verify_email(
        self, flow_id: str, binding: str | None, csrf: Any, code: str
    ) -> ActivationFlow:
        # "286 490", as a person may copy or type it, is the code: spaces are not part of it
        code = "".join(code.split())
        now = self.clock.now()
        error: ActivationError | None = None
        with self.db.transaction() as session:
            flow, target = self._step(session, flow_id, binding, csrf, Event.VERIFY)
            usable = (
                flow.email_code_hash is not None
                and flow.email_code_expires_at is not None
                and now < flow.email_code_expires_at
                and flow.email_code_attempts < EMAIL_CODE_MAX_ATTEMPTS
            )
            if not usable:
                error = ActivationError(
                    "invalid_code",
                    "This code has expired or was tried too often; ask for a new code.",
                    reason="code_expired",
                )
            elif not self.hasher.verify(
                Purpose.EMAIL_CODE, f"{flow.id}:{code}", flow.email_code_hash or ""
            ):
                flow.email_code_attempts += 1
                left = EMAIL_CODE_MAX_ATTEMPTS - flow.email_code_attempts
                error = ActivationError(
                    "invalid_code",
                    f"This code is not right ({left} tries left)."
                    if left
                    else "This code is not right, and was tried too often; ask for a new code.",
                    reason="invalid_code" if left else "code_expired",
                )
            else:
                flow.email_code_hash = None
                flow.email_verified_at = now
                flow.state = target
                flow.updated_at = now
                audit.record(
                    session,
                    EventTag.ACTIVATION_EMAIL_VERIFIED,
                    actor=f"account:{flow.account_id}",
                    subject=None,
                    data={"flow": flow.id[:8], "email": flow.email},
                    clock=self.clock,
                )
        if error is not None:
            raise error
        return flow

    # --- password --------------------------------------------------------------------------------

    def set_password(
        self, flow_id: str, binding: str | None, csrf: Any, password: str
    ) -> tuple[ActivationFlow, Challenge]:
        with self.db.transaction() as session:
            flow, _ = self._step(session, flow_id, binding, csrf, Event.PASSWORD)
            account = session.get_one(Account, flow.account_id)
            professional = session.get_one(Professional, account.professional_id)
            inputs = (professional.matricule, professional.given_name, professional.family_name)
            email = flow.email or ""
        try:
            check_policy(
                password,
                matricule=inputs[0],
                names=inputs[1:],
                other_inputs=[email, email.split("@")[0]],
            )
        except WeakPassword as exc:
            raise ActivationError("weak_password", str(exc), reason=exc.reason) from None
        password_hash = self.passwords.hash(password)  # ~20 ms of CPU: outside any transaction
        now = self.clock.now()
        with self.db.transaction() as session:
            flow, target = self._step(session, flow_id, binding, csrf, Event.PASSWORD)
            flow.password_hash = password_hash
            flow.state = target
            flow.updated_at = now
            audit.record(
                session,
                EventTag.ACTIVATION_PASSWORD_CHOSEN,
                actor=f"account:{flow.account_id}",
                subject=None,
                data={"flow": flow.id[:8]},
                clock=self.clock,
            )
        return flow, self.issue_challenge(flow.id)

    # --- smartcard: the last step ----------------------------------------------------------------

    def complete(
        self, flow_id: str, binding: str | None, csrf: Any, auth_token: Mapping[str, Any]
    ) -> tuple[ActivationFlow, Account]:
        """Verify the card, bind it, consume the letter, activate the account: one transaction."""
        with self.db.transaction() as session:
            self._step(session, flow_id, binding, csrf, Event.SMARTCARD)
        try:
            card = self.check_card(flow_id, auth_token)  # consumes the challenge (committed)
        except AuthsvcError as exc:
            with self.db.transaction() as session:
                flow = session.get_one(ActivationFlow, flow_id)
                audit.record(
                    session,
                    EventTag.ACTIVATION_CARD_REFUSED,
                    actor=f"account:{flow.account_id}",
                    subject=None,
                    data={"flow": flow.id[:8], "reason": getattr(exc, "reason", exc.code)},
                    clock=self.clock,
                )
            raise
        try:
            flow, account = self._bind(flow_id, binding, csrf, card)
        except IntegrityError:
            # another account bound the same card at the same instant: the database said no
            refused = card_refused(
                "card_bound_elsewhere", "This card is already bound to another account."
            )
            self._record_card_refused(flow_id, refused, card)
            raise refused from None
        except ActivationError as exc:
            if exc.code == "invalid_card":
                self._record_card_refused(flow_id, exc, card)
            elif exc.reason in ("professional_left", "account_locked"):
                self._record_card_refused(flow_id, exc, card, tag=EventTag.ACTIVATION_REFUSED)
            raise
        self.on_commit_mail()
        return flow, account

    def _record_card_refused(
        self,
        flow_id: str,
        exc: ActivationError,
        card: ValidatedCertificate,
        *,
        tag: EventTag = EventTag.ACTIVATION_CARD_REFUSED,
    ) -> None:
        """A valid card that cannot be bound here, or a flow that cannot complete: recorded
        after the rollback of the attempt."""
        with self.db.transaction() as session:
            flow = session.get_one(ActivationFlow, flow_id)
            audit.record(
                session,
                tag,
                actor=f"account:{flow.account_id}",
                subject=None,
                data={
                    "flow": flow.id[:8],
                    "reason": exc.reason or exc.code,
                    "card": {"issuer": card.issuer, "serial": card.serial},
                },
                clock=self.clock,
            )

    def _bind(
        self, flow_id: str, binding: str | None, csrf: Any, card: ValidatedCertificate
    ) -> tuple[ActivationFlow, Account]:
        now = self.clock.now()
        with self.db.transaction() as session:
            flow, target = self._step(session, flow_id, binding, csrf, Event.SMARTCARD)
            # Lock the directory entry, then the account (the order the directory import takes
            # them in), and look again: the professional may have left, or the helpdesk locked
            # the account, while this person was typing. Never override either.
            professional_id = session.scalar(
                select(Account.professional_id).where(Account.id == flow.account_id)
            )
            professional = session.get_one(
                Professional, professional_id, with_for_update=True, populate_existing=True
            )
            account = session.get_one(
                Account, flow.account_id, with_for_update=True, populate_existing=True
            )
            if not professional.is_listed:
                raise cannot_complete(
                    "professional_left",
                    "This activation cannot be completed: the professional is no longer listed "
                    "in the directory of health professionals.",
                )
            if account.status == AccountStatus.LOCKED:
                raise cannot_complete(
                    "account_locked",
                    "This activation cannot be completed: the account is locked. "
                    "Call the helpdesk.",
                )
            existing = session.scalars(
                select(Card).where(
                    (Card.fingerprint == card.fingerprint)
                    | ((Card.issuer == card.issuer) & (Card.serial == card.serial))
                )
            ).one_or_none()
            if existing is not None and existing.account_id != account.id:
                raise card_refused(
                    "card_bound_elsewhere", "This card is already bound to another account."
                )
            if existing is not None and existing.status != CardStatus.ACTIVE:
                raise card_refused(
                    "card_revoked", "This card was revoked and cannot be bound again."
                )
            if not holder_matches(
                card_given_name=card.given_name,
                card_surname=card.surname,
                card_common_name=card.common_name,
                given_name=professional.given_name,
                family_name=professional.family_name,
            ):
                log.warning(
                    "activation card refused: holder %r is not %r (flow %s)",
                    card.common_name or card.subject,
                    professional.name,
                    flow.id[:8],
                )
                raise card_refused(
                    "holder_mismatch",
                    "This card belongs to someone else: its holder is not the professional "
                    "this activation letter was sent to.",
                )
            # The letter is consumed here: of two completions racing on one letter, one wins.
            consumed = session.execute(  # type: ignore[attr-defined]
                update(ActivationLetter)
                .where(ActivationLetter.id == flow.letter_id)
                .where(ActivationLetter.used_at.is_(None))
                .where(ActivationLetter.superseded_at.is_(None))
                .values(used_at=now)
            ).rowcount
            if consumed != 1:
                raise ActivationError(
                    "invalid_activation",
                    "This activation letter was used or replaced meanwhile; "
                    "start again with a new letter.",
                    status=409,
                )
            if existing is None:
                bound = Card(
                    id=uuid.uuid4(),
                    account_id=account.id,
                    issuer=card.issuer,
                    serial=card.serial,
                    subject=card.subject,
                    fingerprint=card.fingerprint,
                    certificate=card.certificate.public_bytes(Encoding.DER),
                    not_after=card.not_valid_after,
                    status=CardStatus.ACTIVE,
                    bound_at=now,
                )
                session.add(bound)
            account.email = flow.email
            account.email_verified_at = flow.email_verified_at
            account.password_hash = flow.password_hash
            previous = account.status
            account.status = AccountStatus.ACTIVE
            account.activated_at = now
            account.status_changed_at = now
            flow.state = target
            flow.completed_at = now
            flow.updated_at = now
            flow.password_hash = None
            audit.record(
                session,
                EventTag.ACTIVATION_COMPLETED,
                actor=f"account:{account.id}",
                subject=f"professional:{professional.matricule}",
                data={
                    "flow": flow.id[:8],
                    "letter_id": str(flow.letter_id),
                    "card": {"issuer": card.issuer, "serial": card.serial},
                    "previous_status": previous,
                },
                clock=self.clock,
            )
            if flow.email:
                enqueue(
                    session,
                    "mail",
                    messages.account_activated(
                        to=flow.email,
                        name=professional.name,
                        date=now.strftime("%Y-%m-%d %H:%M UTC"),
                        card=card.serial,
                        lang=flow.lang,
                    ),
                    summary=f"account activated, to {flow.email}",
                    sealer=self.sealer,
                    clock=self.clock,
                )
        return flow, account
