"""Levels of assurance, subjects, and the claims each scope releases (INTERFACE §3)."""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from ..accounts.models import Account
from ..directory.models import Professional
from ..security.secrets import KeyedHasher, Purpose

ACR_LOW = "http://eidas.europa.eu/LoA/low"
ACR_HIGH = "http://eidas.europa.eu/LoA/high"
ACR_VALUES = (ACR_LOW, ACR_HIGH)
#: RFC 8176 methods: a password; a smartcard, a hardware key, and its PIN
AMR_PASSWORD = ["pwd"]
AMR_CARD = ["sc", "hwk", "pin"]

SCOPE_CLAIMS: dict[str, tuple[str, ...]] = {
    "profile": ("name", "given_name", "family_name"),
    "email": ("email", "email_verified"),
    "professional": ("profession", "provider_code"),
    "matricule": ("matricule",),
}
CLAIMS_SUPPORTED = (
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "sid",
    *(claim for claims in SCOPE_CLAIMS.values() for claim in claims),
)


def subject(account: Account, client_id: str, subject_type: str, hasher: KeyedHasher) -> str:
    """The ``sub`` a client sees: the account's opaque subject, or its own pairwise one."""
    if subject_type != "pairwise":
        return account.subject
    mac = hmac.new(
        hasher.key(Purpose.PAIRWISE), f"{client_id}\n{account.subject}".encode(), sha256
    ).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@dataclass(frozen=True)
class Released:
    """What the scopes may release of a person (from their account and directory entry)."""

    given_name: str
    family_name: str
    profession: str
    provider_code: str
    matricule: str
    email: str | None
    email_verified: bool

    @classmethod
    def of(cls, account: Account, professional: Professional) -> Released:
        return cls(
            given_name=professional.given_name,
            family_name=professional.family_name,
            profession=professional.profession,
            provider_code=professional.provider_code,
            matricule=professional.matricule,
            email=account.email,
            email_verified=account.email_verified_at is not None,
        )


def user_claims(account: Account, professional: Professional, scope: str) -> dict[str, Any]:
    """The claims the granted scopes release (``sub`` aside)."""
    return released_claims(Released.of(account, professional), scope)


def released_claims(person: Released, scope: str) -> dict[str, Any]:
    """The claims the granted scopes release of ``person`` (``sub`` aside)."""
    scopes = set(scope.split())
    claims: dict[str, Any] = {}
    if "profile" in scopes:
        claims.update(
            name=f"{person.given_name} {person.family_name}",
            given_name=person.given_name,
            family_name=person.family_name,
        )
    if "email" in scopes and person.email:
        claims.update(email=person.email, email_verified=person.email_verified)
    if "professional" in scopes:
        claims.update(profession=person.profession, provider_code=person.provider_code)
    if "matricule" in scopes:
        claims["matricule"] = person.matricule
    return claims
