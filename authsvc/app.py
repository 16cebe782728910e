"""The services of one authsvc instance, built once from its settings.

Views and commands reach them through :func:`authsvc.web.services` (web) or by building them from
settings (CLI); services themselves receive what they need as arguments and never touch Flask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from .audit.keys import AuditKeys
from .clock import Clock, system_clock
from .config import Settings
from .db import Database
from .security.passwords import OWASP, Argon2Parameters, PasswordHasher
from .security.secrets import KeyedHasher, Purpose

if TYPE_CHECKING:
    from .accounts.service import Accounts
    from .activation.service import ActivationService
    from .helpdesk.service import Helpdesk
    from .login.service import Login
    from .oidc.keys import KeyStore
    from .oidc.server import Provider
    from .oidc.tokens import Tokens
    from .outbox.service import Outbox, OutboxWorker, Sealer
    from .security.throttle import FailureThrottle
    from .sessions.service import Sessions

log = logging.getLogger("authsvc")


@dataclass
class Services:
    settings: Settings
    db: Database
    hasher: KeyedHasher
    clock: Clock = field(default=system_clock)
    argon2: Argon2Parameters = field(default=OWASP)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        argon2: Argon2Parameters = OWASP,
        create_database: bool = False,
    ) -> Services:
        """Build the services; raises ``DatabaseMissing`` for an absent SQLite file unless
        ``create_database`` (``authsvc db upgrade``)."""
        hasher = KeyedHasher(settings.secret_key, settings.secret_key_fallbacks)
        db = Database(
            settings.database_url,
            create=create_database,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        db.session_info["audit_keys"] = AuditKeys.from_hasher(hasher)
        return cls(settings=settings, db=db, hasher=hasher, clock=clock, argon2=argon2)

    @property
    def card_agent_url(self) -> str:
        return self.settings.card_agent_url

    @cached_property
    def passwords(self) -> PasswordHasher:
        return PasswordHasher(self.argon2)

    @cached_property
    def sealer(self) -> Sealer:
        from .outbox.service import Sealer

        return Sealer(self.hasher)

    @cached_property
    def outbox(self) -> Outbox:
        from .mail.sender import MailSender
        from .outbox.service import Outbox

        mail = MailSender(
            sender=self.settings.mail_from,
            smtp_host=self.settings.smtp_host,
            smtp_port=self.settings.smtp_port,
            mail_dir=self.settings.mail_dir,
            clock=self.clock,
            tls=self.settings.smtp_tls,
            username=self.settings.smtp_username,
            password=self.settings.smtp_password,
        )
        from .oidc.logout import BackchannelLogout
        from .outbox.service import Handler

        handlers: dict[str, Handler] = {
            "mail": mail,
            "backchannel_logout": BackchannelLogout(self),
        }
        return Outbox(self.db, self.sealer, handlers, clock=self.clock)

    @cached_property
    def outbox_worker(self) -> OutboxWorker:
        from .maintenance import purge
        from .outbox.service import OutboxWorker

        return OutboxWorker(self.outbox, maintenance=lambda: purge(self))

    @cached_property
    def smartcard(self) -> SmartcardAdapter:
        from .cards.smartcard import SmartcardAdapter

        return SmartcardAdapter(self)

    @cached_property
    def activation(self) -> ActivationService:
        from .activation.service import ActivationService

        return ActivationService(
            db=self.db,
            hasher=self.hasher,
            passwords=self.passwords,
            sealer=self.sealer,
            clock=self.clock,
            issue_challenge=self.smartcard.issue_challenge,
            check_card=self.smartcard.check_card,
            on_commit_mail=self.outbox_worker.notify,
            failures=self.activation_failures,
        )

    @cached_property
    def keys(self) -> KeyStore:
        from .oidc import hsm
        from .oidc.keys import KeyStore

        return KeyStore(self.db, self.hasher, self.clock, hsm.from_settings(self.settings))

    @cached_property
    def tokens(self) -> Tokens:
        from .oidc.tokens import Tokens

        return Tokens(self.keys, self.hasher, self.settings.issuer, self.clock)

    @cached_property
    def sessions(self) -> Sessions:
        from .sessions.service import Sessions

        return Sessions(self.settings, self.hasher, self.sealer, self.clock)

    @cached_property
    def accounts(self) -> Accounts:
        from .accounts.service import Accounts

        return Accounts()

    @cached_property
    def login(self) -> Login:
        from .login.service import Login

        return Login(self)

    @cached_property
    def login_failures(self) -> FailureThrottle:
        from .security.throttle import FailureThrottle

        return FailureThrottle(
            self.settings.ratelimit_storage,
            prefix="login-matricule",
            key_prefix=self.settings.ratelimit_prefix,
        )

    @cached_property
    def activation_failures(self) -> FailureThrottle:
        """Refused activation starts per matricule (the letter's own counter is in the
        database): enumeration from many addresses is slowed down too."""
        from .security.throttle import FailureThrottle

        return FailureThrottle(
            self.settings.ratelimit_storage,
            prefix="activation-matricule",
            free=5,
            key_prefix=self.settings.ratelimit_prefix,
        )

    @cached_property
    def helpdesk(self) -> Helpdesk:
        from .helpdesk.service import Helpdesk

        return Helpdesk(self)

    @cached_property
    def oidc(self) -> Provider:
        from .oidc.server import Provider

        return Provider(self)

    def logout_csrf(self, session_cookie: str | None) -> str:
        """The logout confirmation's anti-CSRF token: bound to the browser's session cookie."""
        return self.hasher.hash(Purpose.FLOW_BINDING, f"logout\n{session_cookie or ''}")[:32]

    def logout_csrf_ok(self, token: str | None, session_cookie: str | None) -> bool:
        from .security.secrets import equal

        return isinstance(token, str) and equal(token, self.logout_csrf(session_cookie))

    def close(self) -> None:
        if "outbox_worker" in self.__dict__:
            self.outbox_worker.stop()
        self.db.dispose()


if TYPE_CHECKING:
    from .cards.smartcard import SmartcardAdapter
