"""Authlib's authorization server, wired to authsvc's storage, tokens and levels.

Authlib validates the protocol: client authentication (``client_secret_basic``,
``client_secret_post``, ``private_key_jwt``, ``none``), exact redirect URIs, PKCE (S256 only,
required of every client), scopes, the grants' rules, revocation (RFC 7009), introspection
(RFC 7662) and ``iss`` in authorization responses (RFC 9207). authsvc provides the hooks below.

Every request to an endpoint runs in one database transaction (``g.oidc_db``, opened by the
view): a code exchange marks the code used, creates the token family and registers the tokens
together, or not at all; a replayed code or refresh token revokes what it had issued, and that
revocation is committed even though the request itself fails with ``invalid_grant``.

The grants that only insert — client_credentials and, on SQLite, the code exchange; not with a
client assertion — read in a read-only transaction and record their writes (:func:`deferred`),
which the view then makes in a short write transaction, grouped with other requests'
(:class:`~authsvc.db.GroupCommit`). Guards in those writes re-check what was read: the client still
enabled with the same secret, the code still unused (of two exchanges racing on one code exactly
one commits; the other is a replay), the session still alive and the account active. The family
of a code exchange made at once (PostgreSQL) makes the same re-check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    UnsupportedTokenTypeError,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import OpenIDCode, OpenIDToken
from authlib.oidc.core.grants.util import validate_nonce
from flask import Flask, g
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..accounts.models import Account, AccountStatus
from ..audit import service as audit
from ..audit.tags import EventTag
from ..db import DeferredWrites, GroupCommit
from ..directory.models import Professional
from ..metrics import tokens_issued
from ..security.secrets import Purpose
from ..sessions.models import ProviderSession
from ..sessions.service import IDLE_TIMEOUT, TOUCH_EVERY, acr_of
from .claims import subject, user_claims
from .clients import ASSERTION_ALGORITHMS, AUTH_METHODS, ClientView
from .models import AuthorizationCode, Client, RefreshToken, TokenFamily, UsedAssertion
from .tokens import (
    ACCESS_TOKEN_LIFETIME,
    CODE_LIFETIME,
    ID_TOKEN_LIFETIME,
    RegisteredAccess,
    Tokens,
)

if TYPE_CHECKING:
    from ..app import Services

log = logging.getLogger("authsvc.oidc")

# RFC 9864 deprecates the name "EdDSA" (for "Ed25519"); clients still send it, and we accept it
# knowingly (clients.ASSERTION_ALGORITHMS): joserfc's warning at every verification is noise.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)


#: a client, as :class:`ClientView` reads it (a Core query: no ORM object to build and track)
_CLIENT = select(*cast(Table, Client.__table__).c).where(Client.client_id == bindparam("client_id"))


#: how long a client read for a client_credentials request is used again (its metadata: a scope
#: or grant taken from it takes this long to be seen; disabling it or a new secret, no time)
CLIENT_CACHE_SECONDS = 5.0
#: clients remembered at most (the cache starts afresh beyond; there are a few dozen clients)
CLIENT_CACHE_SIZE = 1000


def db() -> Session:
    """The transaction of the current endpoint request."""
    return g.oidc_db  # type: ignore[no-any-return]


def cached_clients() -> bool:
    """Whether this request authenticates its client from :meth:`Provider.cached_client`: a
    deferred one, or an introspection, which re-checks the client with the token it reads."""
    return deferred() is not None or bool(g.get("oidc_cached_client"))


def deferred() -> DeferredWrites | None:
    """Where this request's writes go when its transaction only reads (a client_credentials
    request: views._endpoint), else None: they are made at once in :func:`db`."""
    return g.get("oidc_writes")


@dataclass
class Grantee:
    """The person behind a grant, as the session that authenticated them says."""

    account: Account
    professional: Professional
    session_id: str
    acr: str
    amr: list[str]
    auth_time: datetime
    session_expires_at: datetime
    #: the family the grant's tokens join: an existing one (a refresh), else made by generate_token
    family_id: uuid.UUID | None = None
    #: the id generate_token gives the family it makes (a deferred code exchange: the code's burn,
    #: recorded before, already names it)
    new_family_id: uuid.UUID | None = None

    def get_user_id(self) -> str:
        return str(self.account.id)


_CODES = cast(Table, AuthorizationCode.__table__)
#: a code, burned as it is found (UPDATE … RETURNING: SQLite 3.35+, PostgreSQL)
_BURN_CODE = (
    update(_CODES)
    .where(
        _CODES.c.code_hash == bindparam("b_code_hash"),
        _CODES.c.client_id == bindparam("b_client_id"),
        _CODES.c.used_at.is_(None),
    )
    .values(used_at=bindparam("b_now"))
    .returning(*_CODES.c)
)
#: a code, burned later (a deferred exchange): unused, this client's
_FIND_CODE = select(*_CODES.c).where(
    _CODES.c.code_hash == bindparam("code_hash"),
    _CODES.c.client_id == bindparam("client_id"),
    _CODES.c.used_at.is_(None),
)
#: the burn of a code found unused by a deferred exchange, with the family it made: no row if
#: another exchange burned it meanwhile (guard :data:`CODE_USED`)
_BURN_FOUND_CODE = (
    update(_CODES)
    .where(_CODES.c.code_hash == bindparam("b_code_hash"), _CODES.c.used_at.is_(None))
    .values(used_at=bindparam("b_now"), family_id=bindparam("b_family_id"))
)
#: the burn of a code whose exchange failed (a code, once shown, is used up)
_BURN_UNUSED = (
    update(_CODES)
    .where(_CODES.c.code_hash == bindparam("b_code_hash"), _CODES.c.used_at.is_(None))
    .values(used_at=bindparam("b_now"))
)
#: the guard of a deferred exchange's burn (:class:`~authsvc.db.StaleRead`): used meanwhile
CODE_USED = "code"
#: a session's last activity, moved on (a deferred request: a write made with the others)
_SESSIONS = cast(Table, ProviderSession.__table__)
_TOUCH_SESSION = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("b_id"), _SESSIONS.c.last_seen_at < bindparam("b_now"))
    .values(last_seen_at=bindparam("b_now"))
)
#: a code that was not burned just now: what a replay needs (locked, as the revocation follows)
_USED_CODE = (
    select(_CODES.c.client_id, _CODES.c.account_id, _CODES.c.family_id)
    .where(_CODES.c.code_hash == bindparam("code_hash"), _CODES.c.used_at.is_not(None))
    .with_for_update()
)
#: whether a code was used (by its own client): read by a deferred exchange, which then
#: handles the replay in a write transaction of its own
_CODE_SEEN_USED = select(_CODES.c.client_id).where(
    _CODES.c.code_hash == bindparam("code_hash"), _CODES.c.used_at.is_not(None)
)
#: the family a code's exchange created: a replay of the code revokes it
_LINK_CODE = (
    update(_CODES)
    .where(_CODES.c.code_hash == bindparam("b_code_hash"))
    .values(family_id=bindparam("b_family_id"))
)


#: the person behind a grant and their session, in one query (Provider.grantee)
_GRANTEE = (
    select(Account, ProviderSession, Professional)
    .join(Professional, Professional.id == Account.professional_id)
    .join(ProviderSession, ProviderSession.account_id == Account.id)
    .where(Account.id == bindparam("account_id"), ProviderSession.id == bindparam("session_id"))
)


@dataclass(frozen=True)
class FoundCode:
    """The code an exchange found unused (``g.oidc_code``): what the view needs to finish the
    exchange when its writes are not made or rolled back (the code is burned all the same), or
    fail (a replay, a session over, the client changed)."""

    code_hash: str
    client_id: str
    secret_hash: str | None


@dataclass
class CodeView:
    """An authorization code as Authlib sees it (AuthorizationCodeMixin)."""

    row: Any  # a row of authorization_codes
    #: a deferred exchange: the id of the family it will make (its burn names it)
    family_id: uuid.UUID | None = None

    @property
    def code_challenge(self) -> str:
        return self.row.code_challenge

    @property
    def code_challenge_method(self) -> str:
        return self.row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return int(self.row.auth_time.timestamp())

    def get_acr(self) -> str:
        return self.row.acr

    def get_amr(self) -> list[str]:
        return list(self.row.amr)


@dataclass
class TokenRecord:
    """A refresh or access token as the revocation and introspection endpoints see it."""

    kind: str  # "refresh_token" or "access_token"
    client_id: str
    family: TokenFamily | RegisteredAccess
    expires_at: datetime
    revoked: bool
    scope: str
    claims: dict[str, Any]
    refresh: RefreshToken | None = None
    now: datetime | None = None

    def check_client(self, client: ClientView) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return self.now is not None and self.now >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked or self.family.revoked_at is not None


class Provider:
    """The authorization server of one application, with its hooks."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.issuer = services.settings.issuer
        self.tokens: Tokens = services.tokens
        self.server = AuthorizationServer()
        #: the deferred writes of this process's requests, committed in groups (views._endpoint)
        self.commits = GroupCommit(services.db, around=audit.batch)
        #: client id -> (time.monotonic() when read, the client): :meth:`cached_client`
        self._clients: dict[str, tuple[float, ClientView]] = {}

    def init_app(self, app: Flask) -> None:
        server = self.server
        server.init_app(app, query_client=self.query_client, save_token=self.save_token)
        server.register_token_generator("default", self.generate_token)
        server.register_client_auth_method("private_key_jwt", PrivateKeyJwt(self))
        provider = self

        class IssuerParam(IssuerParameter):  # type: ignore[misc]
            def get_issuer(self) -> str:
                return provider.issuer

        server.register_extension(IssuerParam())
        server.register_grant(
            make_code_grant(self), [IdTokens(self, on_code=True), S256Required(required=True)]
        )
        server.register_grant(make_refresh_grant(self), [IdTokens(self, on_code=False)])
        server.register_grant(make_client_credentials_grant(self))
        server.register_endpoint(make_revocation_endpoint(self))
        server.register_endpoint(make_introspection_endpoint(self))
        from .logout import make_end_session_endpoint

        server.register_endpoint(make_end_session_endpoint(self))
        from .discovery import metadata

        body = json.dumps(metadata(self.issuer), separators=(",", ":")).encode()
        self.discovery_json = body
        self.discovery_etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    # --- clients ---

    def query_client(self, client_id: str) -> ClientView | None:
        if not isinstance(client_id, str) or len(client_id) > 64:
            return None
        if cached_clients():
            return self.cached_client(client_id)
        return self._load_client(db(), client_id)

    def _load_client(self, session: Session, client_id: str) -> ClientView | None:
        row = session.execute(_CLIENT, {"client_id": client_id}).one_or_none()
        if row is None or row.disabled_at is not None:
            return None
        return ClientView.of(row, self.services.hasher)

    def cached_client(self, client_id: str) -> ClientView | None:
        """The client as read at most :data:`CLIENT_CACHE_SECONDS` ago (unknown ones are not
        remembered). Only for requests whose writes re-check, when they are made, that the client
        is still enabled with the same secret (:meth:`Tokens.new_service_family`): a client
        disabled or given a new secret gets nothing more at once, on every instance."""
        now = time.monotonic()
        cached = self._clients.get(client_id)
        if cached is not None and now - cached[0] < CLIENT_CACHE_SECONDS:
            return cached[1]
        with self.services.db.read_transaction(snapshot=False) as session:  # one statement
            client = self._load_client(session, client_id)
        if client is None:
            self._clients.pop(client_id, None)
        else:
            if len(self._clients) >= CLIENT_CACHE_SIZE:
                self._clients.clear()
            self._clients[client_id] = (now, client)
        return client

    def forget_clients(self) -> None:
        self._clients.clear()

    # --- tokens ---

    def generate_token(
        self,
        grant_type: str,
        client: ClientView,
        user: Grantee | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        scope = scope or ""
        if user is None:  # client_credentials: the service in its own name
            # what it registered, never more (RFC 6749 §3.3); openid means a person: not here
            scope = " ".join(s for s in client.get_allowed_scope(scope).split() if s != "openid")
            later = deferred()
            writes = later if later is not None else db()
            family_id = self.tokens.new_service_family(
                writes, client_id=client.client_id, secret_hash=client.secret_hash, scope=scope
            )
            access = self.tokens.access_token(
                writes,
                family_id=family_id,
                client_id=client.client_id,
                sub=client.client_id,
                scope=scope,
                acr=None,
                auth_time=None,
            )
            return {
                "token_type": "Bearer",
                "access_token": access.token,
                "expires_in": access.expires_in,
                "scope": scope,
            }
        later = deferred()
        writes = later if later is not None else db()
        if user.family_id is None:  # re-checks the client and the session as it is written
            user.family_id = self.tokens.new_grant_family(
                writes,
                client_id=client.client_id,
                secret_hash=client.secret_hash,
                account_id=user.account.id,
                session_id=user.session_id,
                scope=scope,
                idle_timeout=IDLE_TIMEOUT,
                family_id=user.new_family_id,
            )
        sub = subject(user.account, client.client_id, client.subject_type, self.services.hasher)
        access = self.tokens.access_token(
            writes,
            family_id=user.family_id,
            client_id=client.client_id,
            sub=sub,
            scope=scope,
            acr=user.acr,
            auth_time=user.auth_time,
            sid=user.session_id,
        )
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": access.token,
            "expires_in": access.expires_in,
            "scope": scope,
        }
        if include_refresh_token and client.check_grant_type("refresh_token"):
            token["refresh_token"] = self.tokens.refresh_token(
                writes, family_id=user.family_id, session_expires_at=user.session_expires_at
            )
        return token

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        """Tokens are registered as they are made (generate_token); here the code learns which
        family its exchange created, so that a replay of the code can revoke it."""
        code = getattr(request, "authorization_code", None)
        user = getattr(request, "user", None)
        writes = deferred()
        if writes is None and isinstance(code, CodeView) and isinstance(user, Grantee):
            db().execute(
                _LINK_CODE, {"b_code_hash": code.row.code_hash, "b_family_id": user.family_id}
            )
        client = request.client
        grant_type = request.payload.grant_type
        data = {
            "grant_type": grant_type,
            "scope": token.get("scope"),
            "family": str(user.family_id) if isinstance(user, Grantee) else None,
            "acr": user.acr if isinstance(user, Grantee) else None,
        }

        def issued(session: Session) -> None:
            audit.record(
                session,
                EventTag.TOKENS_ISSUED,
                chain=audit.token_chain(session),
                actor=f"client:{client.client_id}",
                subject=f"account:{user.account.id}" if isinstance(user, Grantee) else None,
                data=data,
                clock=self.services.clock,
            )

        if writes is not None:
            writes.later(issued)
            writes.on_commit(lambda: tokens_issued(grant_type))  # once, whatever the retries
        else:
            issued(db())
            tokens_issued(grant_type)

    def grantee(
        self,
        session: Session,
        account_id: uuid.UUID,
        session_id: str | None,
        *,
        touch: bool = True,
    ) -> Grantee | None:
        """The person and their live session, or None (the grant is refused). With ``touch``
        (a grant: the relying service acting in the session), the session's last activity moves
        on; not for a read-only look (introspection)."""
        if session_id is None:
            return None
        found = session.execute(
            _GRANTEE, {"account_id": account_id, "session_id": session_id}
        ).one_or_none()
        if found is None:
            return None
        account, live, professional = found
        if account.status != AccountStatus.ACTIVE:
            return None
        now = self.services.clock.now()
        if live.ended_at is not None or now >= live.expires_at:
            return None
        # the session's idle rule holds here too; a relying service's refresh is activity in it
        if now - live.last_seen_at >= IDLE_TIMEOUT:
            return None
        if touch and now - live.last_seen_at >= TOUCH_EVERY:
            later = deferred()
            if later is None:
                live.last_seen_at = now
            else:
                later.execute(_TOUCH_SESSION, {"b_id": live.id, "b_now": now})
        return Grantee(
            account=account,
            professional=professional,
            session_id=live.id,
            acr=acr_of(live, now),
            amr=list(live.amr),
            auth_time=live.auth_time,
            session_expires_at=live.expires_at,
        )

    # --- the end of a deferred code exchange (views._endpoint) ---

    def burn_code(self, code: FoundCode) -> None:
        """A code found by an exchange that issued nothing is used up all the same (a wrong
        verifier or redirect URI, a session over): as it would be had the exchange succeeded."""
        with self.services.db.transaction() as session:
            session.execute(
                _BURN_UNUSED, {"b_code_hash": code.code_hash, "b_now": self.services.clock.now()}
            )

    def code_replayed(self, code: FoundCode) -> None:
        """Another exchange burned the code between this one's read and its writes: this one is
        the replay (RFC 9700 §4.1), and revokes what the other was issued."""
        with self.services.db.transaction() as session:
            row = session.execute(_USED_CODE, {"code_hash": code.code_hash}).one_or_none()
            if row is not None and row.client_id == code.client_id:
                self.replayed(session, row, code.client_id)

    def client_changed(self, code: FoundCode) -> bool:
        """Whether the client of a code exchange whose grant guard failed was disabled or given
        a new secret meanwhile (``invalid_client``), rather than the grant being over
        (``invalid_grant``): the one guard checks both."""
        self.forget_clients()
        client = self.cached_client(code.client_id)
        return client is None or client.secret_hash != code.secret_hash

    def replayed(self, session: Session, row: Any, client_id: str) -> None:
        """RFC 6749 §4.1.2 / RFC 9700: a second use revokes what the first issued."""
        if row.family_id is not None:
            self.tokens.revoke_family(session, row.family_id, "authorization code replayed")
        audit.record(
            session,
            EventTag.CODE_REPLAYED,
            actor=f"client:{client_id}",
            subject=f"account:{row.account_id}",
            data={"family": str(row.family_id) if row.family_id else None},
            clock=self.services.clock,
        )
        log.warning("authorization code replayed by client %s", client_id)


class S256Required(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 only (RFC 9700 §2.1.1), required of every client, public or not.

    Authlib's extension requires PKCE of public clients at the token endpoint only; here the
    authorization request itself must carry ``code_challenge`` and ``code_challenge_method=S256``
    (absent, the method would mean ``plain``: RFC 7636 §4.3).
    """

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - Authlib's own attribute

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError(
                "PKCE is required: send code_challenge with code_challenge_method=S256.",
                redirect_uri=redirect_uri,
            )
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError(
                "Only code_challenge_method=S256 is supported.", redirect_uri=redirect_uri
            )
        super().validate_code_challenge(grant, redirect_uri)


class IdTokens(OpenIDCode):  # type: ignore[misc]
    """ID tokens, signed with the client's algorithm by authsvc's key store.

    Unlike Authlib's OpenIDCode, it leaves ``prompt``, ``max_age`` and the levels to the
    authorization view (authsvc/oidc/views.py), which knows the session.
    """

    def __init__(self, provider: Provider, *, on_code: bool) -> None:
        super().__init__(require_nonce=False)
        self.provider = provider
        self.on_code = on_code

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return False  # a nonce is the client's to check against its own session

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_create_token_response", self.process_token)
        if self.on_code:
            grant.register_hook(
                "after_validate_authorization_request_payload",
                lambda g_, redirect_uri: validate_nonce(g_.request, self.exists_nonce, False),
            )

    def encode_id_token(self, token: dict[str, Any], request: Any) -> str:
        client: ClientView = request.client
        user: Grantee = request.user
        now = int(self.provider.services.clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": self.provider.issuer,
            "sub": subject(
                user.account, client.client_id, client.subject_type, self.provider.services.hasher
            ),
            "aud": client.client_id,
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME,
            "auth_time": int(user.auth_time.timestamp()),
            "acr": user.acr,
            "amr": user.amr,
            "sid": user.session_id,
        }
        code = getattr(request, "authorization_code", None)
        if isinstance(code, CodeView) and code.get_nonce():
            claims["nonce"] = code.get_nonce()
        claims.update(user_claims(user.account, user.professional, token.get("scope", "")))
        alg = client.id_token_signed_response_alg
        return self.provider.tokens.keys.sign(claims, alg=alg, typ="JWT")


def make_code_grant(provider: Provider) -> type:
    class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)  # noqa: RUF012

        def save_authorization_code(self, code: str, request: Any) -> None:
            user: Grantee = request.user
            payload = request.payload
            now = provider.services.clock.now()
            db().add(
                AuthorizationCode(
                    code_hash=provider.services.hasher.hash(Purpose.AUTHORIZATION_CODE, code),
                    client_id=request.client.client_id,
                    account_id=user.account.id,
                    session_id=user.session_id,
                    redirect_uri=payload.redirect_uri,
                    scope=request.client.get_allowed_scope(payload.scope),
                    nonce=payload.data.get("nonce"),
                    code_challenge=payload.data["code_challenge"],
                    code_challenge_method=payload.data.get("code_challenge_method", "S256"),
                    acr=user.acr,
                    amr=user.amr,
                    auth_time=user.auth_time,
                    created_at=now,
                    expires_at=now + timedelta(seconds=CODE_LIFETIME),
                )
            )

        def query_authorization_code(self, code: str, client: ClientView) -> CodeView | None:
            if not isinstance(code, str) or len(code) > 200:
                return None
            session = db()
            code_hash = provider.services.hasher.hash(Purpose.AUTHORIZATION_CODE, code)
            now = provider.services.clock.now()
            writes = deferred()
            if writes is not None:
                return self._found_for_later(session, writes, code_hash, client, now)
            # burned in the statement that finds it, whatever happens next in this exchange: of
            # two exchanges racing on one code, exactly one gets the row back
            row = session.execute(
                _BURN_CODE,
                {"b_code_hash": code_hash, "b_client_id": client.client_id, "b_now": now},
            ).one_or_none()
            if row is None:
                replayed = session.execute(_USED_CODE, {"code_hash": code_hash}).one_or_none()
                if replayed is not None and replayed.client_id == client.client_id:
                    provider.replayed(session, replayed, client.client_id)
                return None  # unknown, another client's, or used before
            # burned again by the view if the transaction is rolled back (a guard failed)
            g.oidc_code = FoundCode(code_hash, client.client_id, client.secret_hash)
            if now >= row.expires_at:
                return None
            return CodeView(row)

        def _found_for_later(
            self,
            session: Session,
            writes: DeferredWrites,
            code_hash: str,
            client: ClientView,
            now: datetime,
        ) -> CodeView | None:
            """A deferred exchange: the code read, unused; its burn, guarded (still unused when
            the writes are made), is the exchange's first write. Found used, it is a replay,
            whose revocation is made at once (the request fails: it has no writes of its own)."""
            row = session.execute(
                _FIND_CODE, {"code_hash": code_hash, "client_id": client.client_id}
            ).one_or_none()
            found = FoundCode(code_hash, client.client_id, client.secret_hash)
            if row is None:
                used_by = session.scalar(_CODE_SEEN_USED, {"code_hash": code_hash})
                if used_by == client.client_id:
                    provider.code_replayed(found)
                return None  # unknown, another client's, or used before
            g.oidc_code = found  # burned by the view if this exchange makes no writes
            if now >= row.expires_at:
                return None
            family_id = uuid.uuid4()
            writes.execute(
                _BURN_FOUND_CODE,
                {"b_code_hash": code_hash, "b_now": now, "b_family_id": family_id},
                expect_row=True,
                guard=CODE_USED,
            )
            return CodeView(row, family_id=family_id)

        def delete_authorization_code(self, authorization_code: CodeView) -> None:
            pass  # kept (used) until purged, so that a replay is recognised

        def authenticate_user(self, authorization_code: CodeView) -> Grantee | None:
            row = authorization_code.row
            grantee = provider.grantee(db(), row.account_id, row.session_id)
            if grantee is None:
                return None
            # the levels of the code: what the session was when the code was issued
            grantee.acr, grantee.amr, grantee.auth_time = row.acr, list(row.amr), row.auth_time
            grantee.new_family_id = authorization_code.family_id
            return grantee

    return CodeGrant


def make_refresh_grant(provider: Provider) -> type:
    class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)  # noqa: RUF012
        INCLUDE_NEW_REFRESH_TOKEN = True

        def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
            session = db()
            row = provider.tokens.find_refresh(session, refresh_token, lock=True)
            if row is None:
                return None
            family = session.get_one(TokenFamily, row.family_id)
            now = provider.services.clock.now()
            if row.used_at is not None:
                # reuse: whoever holds the newer token, the family is compromised
                if provider.tokens.revoke_family(session, family.id, "refresh token reused"):
                    audit.record(
                        session,
                        EventTag.REFRESH_REUSED,
                        actor=f"client:{family.client_id}",
                        subject=f"account:{family.account_id}",
                        data={"family": str(family.id)},
                        clock=provider.services.clock,
                    )
                    log.warning("refresh token reused: family %s revoked", family.id)
                return None
            if family.revoked_at is not None or now >= row.expires_at:
                return None
            return TokenRecord(
                kind="refresh_token",
                client_id=family.client_id,
                family=family,
                expires_at=row.expires_at,
                revoked=False,
                scope=family.scope,
                claims={},
                refresh=row,
                now=now,
            )

        def authenticate_user(self, refresh_token: TokenRecord) -> Grantee:
            family = refresh_token.family
            grantee = (
                provider.grantee(db(), family.account_id, family.session_id)
                if family.account_id is not None
                else None
            )
            if grantee is None:  # the session is over (ended, idle, expired) or the account is
                # not active: the grant is no longer valid (RFC 6749 §5.2), not a bad request
                raise InvalidGrantError("The session of this refresh token is over.")
            grantee.family_id = family.id
            return grantee

        def revoke_old_credential(self, refresh_token: TokenRecord) -> None:
            assert refresh_token.refresh is not None
            refresh_token.refresh.used_at = provider.services.clock.now()

    return RefreshGrant


def make_client_credentials_grant(provider: Provider) -> type:
    class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = [  # noqa: RUF012 - Authlib's own attribute
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ]

    return ClientCredentialsGrant


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    """``private_key_jwt`` (OIDC Core §9, RFC 7523): single-use assertions, audience checked."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, provider: Provider) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.provider = provider

    def get_audiences(self) -> list[str]:
        issuer = self.provider.issuer
        return [issuer, f"{issuer}/token"]

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        if not isinstance(jti, str) or len(jti) > 200:
            return False
        session = db()
        exp = claims.get("exp")
        now = self.provider.services.clock.now()
        expires = (
            datetime.fromtimestamp(exp, tz=now.tzinfo)
            if isinstance(exp, int)
            else now + timedelta(minutes=10)
        )
        try:
            with session.begin_nested():
                session.add(
                    UsedAssertion(client_id=str(claims["sub"]), jti=jti, expires_at=expires)
                )
        except IntegrityError:
            log.warning("client assertion replayed (client %s)", claims.get("sub"))
            return False
        return True

    def resolve_client_public_key(self, client: ClientView) -> Any:
        if not client.jwks:  # a client of another method naming itself in an assertion
            raise InvalidClientError(description="The client has no registered keys.")
        return client.key_set()

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        """Verify the assertion with the asymmetric algorithms discovery advertises, and those
        only (joserfc's default would also take HS256 with an ``oct`` key)."""
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(ASSERTION_ALGORITHMS))
        except JoseError as exc:
            raise InvalidClientError(description=exc.description) from exc
        self.verify_claims(token.claims)
        return token.claims


def _query_token(
    provider: Provider, token: str, hint: str | None, caller: ClientView | None = None
) -> TokenRecord | None:
    """The token an introspection or revocation request names. The hint only says where to look
    first: a token not found there is looked for among the other kind (RFC 7009 §2.1, RFC 7662
    §2.1).

    With ``caller`` (a client read from the cache: :func:`cached_clients`), it is also checked
    that the caller is, now, still enabled with the secret it authenticated with — in the access
    token's own query when that finds the token, else with a query of its own — and
    ``invalid_client`` raised if not: a disabled client or an old secret learns nothing more."""
    if not isinstance(token, str):
        return None
    session = db()
    now = provider.services.clock.now()
    checked: list[bool] = []
    if hint == "access_token":
        found = _access_record(provider, session, token, now, caller, checked) or _refresh_record(
            provider, session, token, now
        )
    else:
        found = _refresh_record(provider, session, token, now) or _access_record(
            provider, session, token, now, caller, checked
        )
    if caller is not None:
        if not checked:
            checked.append(
                provider.tokens.client_unchanged(session, caller.client_id, caller.secret_hash)
            )
        if not checked[0]:
            provider.forget_clients()
            # 401, as for any failed client authentication (RFC 6749 §5.2)
            raise InvalidClientError(description="The client is no longer valid.", status_code=401)
    return found


def _refresh_record(
    provider: Provider, session: Session, token: str, now: datetime
) -> TokenRecord | None:
    row = provider.tokens.find_refresh(session, token)
    if row is None:
        return None
    family = session.get_one(TokenFamily, row.family_id)
    return TokenRecord(
        kind="refresh_token",
        client_id=family.client_id,
        family=family,
        expires_at=row.expires_at,
        revoked=row.used_at is not None,
        scope=family.scope,
        claims={},
        refresh=row,
        now=now,
    )


def _access_record(
    provider: Provider,
    session: Session,
    token: str,
    now: datetime,
    caller: ClientView | None = None,
    checked: list[bool] | None = None,
) -> TokenRecord | None:
    """An access token's record; with ``caller``, whether it is unchanged is appended to
    ``checked`` when the token's query could tell (:func:`_query_token`)."""
    claims = provider.tokens.decode_access(token)
    if claims is None:
        return None
    if caller is None:
        found = provider.tokens.registered_access(session, claims["jti"])
    else:
        found, caller_ok = provider.tokens.registered_access_for(
            session,
            claims["jti"],
            caller_id=caller.client_id,
            caller_secret_hash=caller.secret_hash,
        )
        if caller_ok is not None and checked is not None:
            checked.append(caller_ok)
    if found is None:
        return None
    return TokenRecord(
        kind="access_token",
        client_id=found.client_id,
        family=found,
        expires_at=found.expires_at,
        revoked=found.token_revoked,
        scope=str(claims.get("scope", "")),
        claims=claims,
        now=now,
    )


class UnknownHintIsBadRequest:
    """RFC 7009 §2.2.1: ``unsupported_token_type`` is a 400 (Authlib answers it with 401)."""

    def check_params(self, request: Any, client: ClientView) -> None:
        try:
            super().check_params(request, client)  # type: ignore[misc]
        except UnsupportedTokenTypeError as exc:
            exc.status_code = 400
            raise


def make_revocation_endpoint(provider: Provider) -> type:
    class Revocation(UnknownHintIsBadRequest, RevocationEndpoint):  # type: ignore[misc]
        CLIENT_AUTH_METHODS = list(AUTH_METHODS)  # noqa: RUF012

        def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
            return _query_token(provider, token_string, token_type_hint)

        def revoke_token(self, token: TokenRecord, request: Any) -> None:
            session = db()
            if token.kind == "refresh_token":
                provider.tokens.revoke_family(session, token.family.id, "refresh token revoked")
            else:
                provider.tokens.revoke_access(session, token.claims["jti"])
            audit.record(
                session,
                EventTag.TOKEN_REVOKED,
                actor=f"client:{token.client_id}",
                subject=f"account:{token.family.account_id}" if token.family.account_id else None,
                data={"kind": token.kind, "family": str(token.family.id)},
                clock=provider.services.clock,
            )

    return Revocation


def make_introspection_endpoint(provider: Provider) -> type:
    class Introspection(UnknownHintIsBadRequest, IntrospectionEndpoint):  # type: ignore[misc]
        CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]  # noqa: RUF012

        def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
            return _query_token(provider, token_string, token_type_hint)

        def authenticate_token(self, request: Any, client: ClientView) -> TokenRecord | None:
            """Authlib's, but the token looked up with its caller when the caller came from the
            cache (:func:`_query_token` re-checks it)."""
            self.check_params(request, client)
            caller = client if cached_clients() else None
            form = request.form
            token = _query_token(provider, form["token"], form.get("token_type_hint"), caller)
            if token and self.check_permission(token, client, request):
                return token
            return None

        def check_permission(self, token: TokenRecord, client: ClientView, request: Any) -> bool:
            """Who may see what (RFC 7662 §4): an access token is for the platform's APIs
            (``aud`` = the issuer), any confidential client (a resource server) may introspect
            it; a refresh token only ever goes to the client it was issued to, and only that
            client may introspect it. Anything else is answered ``{"active": false}``."""
            if client.is_public:
                return False
            return token.kind == "access_token" or token.client_id == client.client_id

        def introspect_token(self, token: TokenRecord) -> dict[str, Any]:
            claims = token.claims
            body: dict[str, Any] = {
                "active": True,
                "iss": provider.issuer,
                "client_id": token.client_id,
                "scope": token.scope,
                "token_type": "Bearer" if token.kind == "access_token" else "refresh_token",
                "exp": int(token.expires_at.timestamp()),
            }
            if token.kind == "access_token":
                for name in ("sub", "iat", "acr", "auth_time", "jti", "aud", "sid"):
                    if name in claims:
                        body[name] = claims[name]
            else:
                session = db()
                family = token.family
                if family.account_id is not None:
                    grantee = provider.grantee(
                        session, family.account_id, family.session_id, touch=False
                    )
                    if grantee is None:
                        return {"active": False}
                    client = provider.query_client(family.client_id)
                    if client is not None:
                        body["sub"] = subject(
                            grantee.account,
                            client.client_id,
                            client.subject_type,
                            provider.services.hasher,
                        )
                    body["acr"] = grantee.acr
                    body["auth_time"] = int(grantee.auth_time.timestamp())
            return body

    return Introspection


__all__ = ["ACCESS_TOKEN_LIFETIME", "Grantee", "OpenIDToken", "Provider"]
