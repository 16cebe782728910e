"""Imports every model so that the metadata knows every table (Alembic, tests)."""

from __future__ import annotations

from .accounts.models import Account
from .activation.flows import ActivationFlow
from .activation.models import ActivationLetter
from .audit.models import AuditChainHead, AuditEvent
from .cards.models import Card
from .directory.models import Professional
from .helpdesk.models import StaffRole
from .login.models import LoginFlow
from .oidc.models import (
    AccessToken,
    AuthorizationCode,
    Client,
    RefreshToken,
    SigningKey,
    TokenFamily,
    UsedAssertion,
)
from .outbox.models import OutboxMessage
from .pki.models import RevokedCard, SmartcardChallenge
from .sessions.models import ProviderSession, SessionClient

__all__ = [
    "AccessToken",
    "Account",
    "ActivationFlow",
    "ActivationLetter",
    "AuditChainHead",
    "AuditEvent",
    "AuthorizationCode",
    "Card",
    "Client",
    "LoginFlow",
    "OutboxMessage",
    "Professional",
    "ProviderSession",
    "RefreshToken",
    "RevokedCard",
    "SessionClient",
    "SigningKey",
    "SmartcardChallenge",
    "StaffRole",
    "TokenFamily",
    "UsedAssertion",
]
