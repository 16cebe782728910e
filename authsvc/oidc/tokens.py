"""Issuing, finding and revoking tokens (INTERFACE §3).

- **Access tokens**: RFC 9068 JWTs (``typ: at+jwt``), signed ES256, at most 300 s. Each one's
  ``jti`` is registered with its token family, so that revoking the family (or the token) makes it
  inactive at once for introspection and userinfo, on every instance.
- **Refresh tokens**: random, kept as keyed hashes, rotated at every use; a refresh token used a
  second time revokes its whole family (RFC 9700 §4.14.2). They never outlive their session.
- **Families**: everything issued from one grant (a code exchange, or a client_credentials
  request) belongs to one :class:`~authsvc.oidc.models.TokenFamily`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..clock import Clock
from ..security.secrets import KeyedHasher, Purpose, random_token
from .keys import KeyStore
from .models import AccessToken, RefreshToken, TokenFamily

ACCESS_TOKEN_LIFETIME = 300
ID_TOKEN_LIFETIME = 300
CODE_LIFETIME = 60
#: a refresh token unused this long expires (it never outlives its session anyway)
REFRESH_TOKEN_LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str
    jti: str
    expires_in: int
    claims: dict[str, Any]


class Tokens:
    def __init__(self, keys: KeyStore, hasher: KeyedHasher, issuer: str, clock: Clock) -> None:
        self.keys = keys
        self.hasher = hasher
        self.issuer = issuer
        self.clock = clock

    # --- issuing ---

    def new_family(
        self,
        db: Session,
        *,
        client_id: str,
        account_id: uuid.UUID | None,
        session_id: str | None,
        scope: str,
    ) -> TokenFamily:
        family = TokenFamily(
            id=uuid.uuid4(),
            client_id=client_id,
            account_id=account_id,
            session_id=session_id,
            scope=scope,
            created_at=self.clock.now(),
        )
        db.add(family)
        db.flush()  # before the tokens that refer to it
        return family

    def access_token(
        self,
        db: Session,
        *,
        family: TokenFamily,
        client_id: str,
        sub: str,
        scope: str,
        acr: str | None,
        auth_time: datetime | None,
        sid: str | None = None,
        expires_in: int = ACCESS_TOKEN_LIFETIME,
    ) -> IssuedAccessToken:
        now = self.clock.now()
        iat = int(now.timestamp())
        jti = random_token(18)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": self.issuer,
            "client_id": client_id,
            "scope": scope,
            "iat": iat,
            "exp": iat + expires_in,
            "jti": jti,
        }
        if acr is not None:
            claims["acr"] = acr
        if auth_time is not None:
            claims["auth_time"] = int(auth_time.timestamp())
        if sid is not None:
            claims["sid"] = sid
        token = self.keys.sign(claims, typ="at+jwt")
        db.add(
            AccessToken(
                jti=jti,
                family_id=family.id,
                expires_at=now + timedelta(seconds=expires_in),
            )
        )
        return IssuedAccessToken(token, jti, expires_in, claims)

    def refresh_token(
        self, db: Session, *, family: TokenFamily, session_expires_at: datetime | None
    ) -> str:
        now = self.clock.now()
        token = random_token(32)
        expires = now + REFRESH_TOKEN_LIFETIME
        if session_expires_at is not None:
            expires = min(expires, session_expires_at)
        db.add(
            RefreshToken(
                token_hash=self.hasher.hash(Purpose.REFRESH_TOKEN, token),
                family_id=family.id,
                created_at=now,
                expires_at=expires,
            )
        )
        return token

    # --- finding ---

    def find_refresh(self, db: Session, token: str, *, lock: bool = False) -> RefreshToken | None:
        if not token or len(token) > 200:
            return None
        stmt = select(RefreshToken).where(
            RefreshToken.token_hash == self.hasher.hash(Purpose.REFRESH_TOKEN, token)
        )
        if lock:
            stmt = stmt.with_for_update()
        return db.scalars(stmt).one_or_none()

    def decode_access(self, token: str) -> dict[str, Any] | None:
        """The claims of an access token this provider signed and that has not expired."""
        if not token or len(token) > 8192 or token.count(".") != 2:
            return None
        try:
            claims = self.keys.verify(token, typ="at+jwt")
        except ValueError:
            return None
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= int(self.clock.now().timestamp()):
            return None
        if claims.get("iss") != self.issuer or not isinstance(claims.get("jti"), str):
            return None
        return claims

    def active_access(self, db: Session, token: str) -> tuple[dict[str, Any], TokenFamily] | None:
        """An access token's claims and family, if it is valid, unrevoked, and so is its family."""
        claims = self.decode_access(token)
        if claims is None:
            return None
        row = db.get(AccessToken, claims["jti"])
        if row is None or row.revoked_at is not None:
            return None
        family = db.get(TokenFamily, row.family_id)
        if family is None or family.revoked_at is not None:
            return None
        return claims, family

    # --- revoking ---

    def revoke_family(self, db: Session, family_id: uuid.UUID, reason: str) -> bool:
        result = db.execute(
            update(TokenFamily)
            .where(TokenFamily.id == family_id)
            .where(TokenFamily.revoked_at.is_(None))
            .values(revoked_at=self.clock.now(), revoke_reason=reason[:64])
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def revoke_access(self, db: Session, jti: str) -> None:
        db.execute(
            update(AccessToken)
            .where(AccessToken.jti == jti)
            .where(AccessToken.revoked_at.is_(None))
            .values(revoked_at=self.clock.now())
        )
