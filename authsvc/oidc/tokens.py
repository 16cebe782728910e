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
from typing import Any, cast

from sqlalchemy import Connection, Select, Table, bindparam, insert, null, select, update
from sqlalchemy.orm import Session

from ..accounts.models import Account, AccountStatus
from ..clock import Clock
from ..db import DeferredWrites, StaleRead
from ..directory.models import Professional
from ..security.secrets import KeyedHasher, Purpose, random_token
from ..sessions.models import ProviderSession
from .claims import Released
from .keys import KeyStore
from .models import AccessToken, Client, RefreshToken, TokenFamily

ACCESS_TOKEN_LIFETIME = 300
ID_TOKEN_LIFETIME = 300
CODE_LIFETIME = 60
#: a refresh token unused this long expires (it never outlives its session anyway)
REFRESH_TOKEN_LIFETIME = timedelta(hours=12)

# Issuing writes with Core statements, each executed at once in the caller's transaction: a token
# request is a few inserts, and the ORM's unit of work (identity map, flush ordering) cost more
# than the inserts themselves.
_INSERT_ACCESS = insert(cast(Table, AccessToken.__table__))
_INSERT_REFRESH = insert(cast(Table, RefreshToken.__table__))
_FAMILIES = cast(Table, TokenFamily.__table__)
_CLIENTS = cast(Table, Client.__table__)
_SESSIONS = cast(Table, ProviderSession.__table__)
_ACCOUNTS = cast(Table, Account.__table__)

#: the client ``:client_id`` is still registered and enabled, with the secret ``:secret_hash`` it
#: authenticated with (None: a public client, or one with keys)
_CLIENT_UNCHANGED = (
    _CLIENTS.c.client_id == bindparam("client_id"),
    _CLIENTS.c.disabled_at.is_(None),
    _CLIENTS.c.secret_hash.is_not_distinct_from(bindparam("secret_hash")),
)


def _insert_family(account_id: Any, session_id: Any) -> Select[Any]:
    """The values of a new family (``:family_id``, ``:scope``, ``:created_at``), to be selected
    from the rows its guards need."""
    return select(
        bindparam("family_id", type_=_FAMILIES.c.id.type),
        _CLIENTS.c.client_id,
        account_id,
        session_id,
        bindparam("scope", type_=_FAMILIES.c.scope.type),
        bindparam("created_at", type_=_FAMILIES.c.created_at.type),
    )


def _family_guarded_by(source: Select[Any]) -> Any:
    """``INSERT INTO token_families … SELECT``: a row only if the guards of ``source`` hold."""
    return (
        insert(_FAMILIES)
        .from_select(["id", "client_id", "account_id", "session_id", "scope", "created_at"], source)
        .execution_options(preserve_rowcount=True)  # an INSERT's rowcount is kept only when asked
    )


_INSERT_SERVICE_FAMILY = _family_guarded_by(
    _insert_family(null(), null()).where(*_CLIENT_UNCHANGED)
)

#: the guards of deferred issuing writes (:class:`~authsvc.db.StaleRead`'s ``guard``): the client
#: changed (disabled, deleted, a new secret), or the grant did (its session is over, its account
#: not active)
CLIENT_CHANGED = "client"
GRANT_OVER = "grant"

_INSERT_GRANT_FAMILY = _family_guarded_by(
    _insert_family(_ACCOUNTS.c.id, _SESSIONS.c.id)
    .select_from(
        _SESSIONS.join(_ACCOUNTS, _ACCOUNTS.c.id == _SESSIONS.c.account_id).join(
            _CLIENTS, _CLIENTS.c.client_id == bindparam("client_id")
        )
    )
    .where(
        _SESSIONS.c.id == bindparam("session_id"),
        _SESSIONS.c.account_id == bindparam("account_id"),
        _SESSIONS.c.ended_at.is_(None),
        _SESSIONS.c.expires_at > bindparam("created_at", type_=_SESSIONS.c.expires_at.type),
        _SESSIONS.c.last_seen_at > bindparam("idle_since", type_=_SESSIONS.c.last_seen_at.type),
        _ACCOUNTS.c.status == AccountStatus.ACTIVE.value,
        *_CLIENT_UNCHANGED,
    )
    # the session's row is share-locked (PostgreSQL): a session ending meanwhile either waits for
    # this family, then revokes it with the others, or makes this insert find no row
    .with_for_update(read=True, of=_SESSIONS)
)


@dataclass(frozen=True)
class RegisteredAccess:
    """An access token's registration, and its family (what introspection and userinfo read)."""

    expires_at: datetime
    token_revoked: bool
    id: uuid.UUID  # the family's
    client_id: str
    account_id: uuid.UUID | None
    session_id: str | None
    scope: str
    revoked_at: datetime | None  # the family's


_REGISTERED_ACCESS = (
    select(
        AccessToken.expires_at,
        AccessToken.revoked_at.is_not(None),
        TokenFamily.id,
        TokenFamily.client_id,
        TokenFamily.account_id,
        TokenFamily.session_id,
        TokenFamily.scope,
        TokenFamily.revoked_at,
    )
    .join(TokenFamily, TokenFamily.id == AccessToken.family_id)
    .where(AccessToken.jti == bindparam("jti"))
)


#: whether a client (one that introspects) is still enabled with the secret it authenticated with
_CLIENT_STILL_VALID = select(_CLIENTS.c.client_id).where(*_CLIENT_UNCHANGED).exists()
#: an access token's registration, and whether the client asking about it is unchanged
_REGISTERED_ACCESS_FOR = _REGISTERED_ACCESS.add_columns(_CLIENT_STILL_VALID.label("caller_ok"))


_ACCESS_FOR_PERSON = (
    _REGISTERED_ACCESS.add_columns(
        Professional.given_name,
        Professional.family_name,
        Professional.profession,
        Professional.provider_code,
        Professional.matricule,
        Account.email,
        Account.email_verified_at,
    )
    .outerjoin(
        Account,
        (Account.id == TokenFamily.account_id) & (Account.status == AccountStatus.ACTIVE),
    )
    .outerjoin(Professional, Professional.id == Account.professional_id)
)


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

    def new_service_family(
        self, db: Session | DeferredWrites, *, client_id: str, secret_hash: str | None, scope: str
    ) -> uuid.UUID:
        """The family of a client_credentials grant, written only if the client is, when the
        write is made, still registered and enabled with the secret it authenticated with (the
        client may have been read from a cache, or in an earlier transaction): otherwise
        :class:`~authsvc.db.StaleRead`, and nothing is issued."""
        family_id = uuid.uuid4()
        params = {
            "family_id": family_id,
            "client_id": client_id,
            "secret_hash": secret_hash,
            "scope": scope,
            "created_at": self.clock.now(),
        }
        if isinstance(db, DeferredWrites):
            db.execute(_INSERT_SERVICE_FAMILY, params, expect_row=True, guard=CLIENT_CHANGED)
        elif not db.execute(_INSERT_SERVICE_FAMILY, params).rowcount:  # type: ignore[attr-defined]
            raise StaleRead("the client changed", guard=CLIENT_CHANGED)
        return family_id

    def new_grant_family(
        self,
        db: Session | DeferredWrites,
        *,
        client_id: str,
        secret_hash: str | None,
        account_id: uuid.UUID,
        session_id: str,
        scope: str,
        idle_timeout: timedelta,
        family_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """The family of a person's grant (a code exchange), written — at once, or when the
        deferred writes are made — only if the client is still enabled with the secret it
        authenticated with and the grant still holds: the session not ended, expired or idle for
        ``idle_timeout``, the account active. Else :class:`~authsvc.db.StaleRead` with guard
        :data:`GRANT_OVER` (one statement cannot tell which of the two changed), and nothing is
        issued. Read earlier, the session could have ended since: the family would have escaped
        the revocation of the session's families."""
        family_id = family_id or uuid.uuid4()
        now = self.clock.now()
        params = {
            "family_id": family_id,
            "client_id": client_id,
            "secret_hash": secret_hash,
            "account_id": account_id,
            "session_id": session_id,
            "scope": scope,
            "created_at": now,
            "idle_since": now - idle_timeout,
        }
        if isinstance(db, DeferredWrites):
            db.execute(_INSERT_GRANT_FAMILY, params, expect_row=True, guard=GRANT_OVER)
        elif not db.execute(_INSERT_GRANT_FAMILY, params).rowcount:  # type: ignore[attr-defined]
            raise StaleRead("the grant or its client changed", guard=GRANT_OVER)
        return family_id

    def access_token(
        self,
        db: Session | DeferredWrites,
        *,
        family_id: uuid.UUID,
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
        db.execute(
            _INSERT_ACCESS,
            {
                "jti": jti,
                "family_id": family_id,
                "expires_at": now + timedelta(seconds=expires_in),
                "revoked_at": None,
            },
        )
        return IssuedAccessToken(token, jti, expires_in, claims)

    def refresh_token(
        self,
        db: Session | DeferredWrites,
        *,
        family_id: uuid.UUID,
        session_expires_at: datetime | None,
    ) -> str:
        now = self.clock.now()
        token = random_token(32)
        expires = now + REFRESH_TOKEN_LIFETIME
        if session_expires_at is not None:
            expires = min(expires, session_expires_at)
        db.execute(
            _INSERT_REFRESH,
            {
                "token_hash": self.hasher.hash(Purpose.REFRESH_TOKEN, token),
                "family_id": family_id,
                "created_at": now,
                "expires_at": expires,
                "used_at": None,
            },
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

    def registered_access(self, db: Session, jti: str) -> RegisteredAccess | None:
        """The registration of an access token and its family, in one query."""
        row = db.execute(_REGISTERED_ACCESS, {"jti": jti}).one_or_none()
        return None if row is None else RegisteredAccess(*row)

    def registered_access_for(
        self, db: Session, jti: str, *, caller_id: str, caller_secret_hash: str | None
    ) -> tuple[RegisteredAccess | None, bool | None]:
        """:meth:`registered_access`, and — in the same query — whether the client ``caller_id``
        is still enabled with that secret (None when the token is not found: nothing said)."""
        # on the session's connection: a Core read, without the ORM's execution (~45 µs)
        row = (
            db.connection()
            .execute(
                _REGISTERED_ACCESS_FOR,
                {"jti": jti, "client_id": caller_id, "secret_hash": caller_secret_hash},
            )
            .one_or_none()
        )
        if row is None:
            return None, None
        return RegisteredAccess(*row[:8]), bool(row.caller_ok)

    def client_unchanged(self, db: Session, client_id: str, secret_hash: str | None) -> bool:
        """Whether the client is still enabled with the secret it authenticated with."""
        return bool(
            db.scalar(
                select(_CLIENT_STILL_VALID), {"client_id": client_id, "secret_hash": secret_hash}
            )
        )

    def active_access(
        self, db: Session, token: str
    ) -> tuple[dict[str, Any], RegisteredAccess] | None:
        """An access token's claims and family, if it is valid, unrevoked, and so is its family."""
        claims = self.decode_access(token)
        if claims is None:
            return None
        found = self.registered_access(db, claims["jti"])
        if found is None or found.token_revoked or found.revoked_at is not None:
            return None
        return claims, found

    def active_access_for_person(
        self, db: Session | Connection, token: str
    ) -> tuple[dict[str, Any], RegisteredAccess, Released | None] | None:
        """:meth:`active_access`, with what may be released of the person behind it (None when
        the token is a service's own, or the account is not active), in one query (userinfo)."""
        claims = self.decode_access(token)
        if claims is None:
            return None
        row = db.execute(_ACCESS_FOR_PERSON, {"jti": claims["jti"]}).one_or_none()
        if row is None:
            return None
        found = RegisteredAccess(*row[:8])
        if found.token_revoked or found.revoked_at is not None:
            return None
        given_name, family_name, profession, provider_code, matricule, email, verified_at = row[8:]
        person = (
            None
            if given_name is None
            else Released(
                given_name=given_name,
                family_name=family_name,
                profession=profession,
                provider_code=provider_code,
                matricule=matricule,
                email=email,
                email_verified=verified_at is not None,
            )
        )
        return claims, found, person

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
