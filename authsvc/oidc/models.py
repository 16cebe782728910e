"""Relying services, signing keys, codes and tokens."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base


class Client(Base):
    """A relying service registered by the operator (``authsvc clients create``)."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: HMAC-SHA-256 of the secret under the client-secret key; None for public clients
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    #: client_secret_basic, client_secret_post, private_key_jwt or none
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(2000))
    #: scopes it may ask for beyond openid profile email professional
    extra_scopes: Mapped[list[str]] = mapped_column(JSON)
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    #: "high": every sign-in for it is a full one, whatever the request says
    require_acr: Mapped[str | None] = mapped_column(String(8))
    subject_type: Mapped[str] = mapped_column(String(16))
    #: its ID tokens are signed with this (ES256, or RS256 for clients that can do nothing else)
    id_token_signed_response_alg: Mapped[str] = mapped_column(String(8))
    #: for private_key_jwt: its public keys (a JWK Set)
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class SigningKey(Base):
    """A key that signs ID tokens, access tokens and logout tokens.

    The private key is kept encrypted (Fernet, key-encryption key derived from the instance
    secret), or on a PKCS#11 token, in which case ``private_key`` is None and ``pkcs11_label``
    names the key there. The public key is published in the JWKS from ``created_at`` until
    ``expires_at``; the newest key of each algorithm signs.
    """

    __tablename__ = "signing_keys"
    __table_args__ = (
        # one current key per algorithm (the previous one has its retirement time set)
        Index(
            "uq_signing_keys_current",
            "alg",
            unique=True,
            postgresql_where=text("retired_at IS NULL"),
            sqlite_where=text("retired_at IS NULL"),
        ),
    )

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(8))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    private_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    pkcs11_label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    #: no longer signs after this (a newer key took over)
    retired_at: Mapped[datetime | None]
    #: no longer published after this (every token it signed has expired)
    expires_at: Mapped[datetime | None]


class AuthorizationCode(Base):
    """A code of the authorization-code grant: single use, 60 s, bound to client, redirect URI,
    PKCE challenge and the session it came from."""

    __tablename__ = "authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    scope: Mapped[str] = mapped_column(String(1000))
    nonce: Mapped[str | None] = mapped_column(String(500))
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(8))
    acr: Mapped[str] = mapped_column(String(64))
    amr: Mapped[list[str]] = mapped_column(JSON)
    auth_time: Mapped[datetime]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    #: the token family its exchange created: revoked if the code is used again
    family_id: Mapped[uuid.UUID | None]


class TokenFamily(Base):
    """Everything issued from one grant: the refresh tokens of a rotation chain and the access
    tokens. Revoking the family (code replay, refresh reuse, logout, card revoked, account
    suspended) makes all of them inactive."""

    __tablename__ = "token_families"
    __table_args__ = (Index("ix_token_families_live_session", "session_id", "revoked_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    #: None for client_credentials (the service acts in its own name)
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[str | None] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoke_reason: Mapped[str | None] = mapped_column(String(64))


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("token_families.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    #: rotated: a second use revokes the family
    used_at: Mapped[datetime | None]


class AccessToken(Base):
    """The registry of issued JWT access tokens (by ``jti``): introspection and userinfo look an
    access token up here, so that a revoked family or a revoked token is inactive at once."""

    __tablename__ = "access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("token_families.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime | None]


class UsedAssertion(Base):
    """``private_key_jwt`` client assertions already seen (single use, by ``jti``)."""

    __tablename__ = "used_client_assertions"
    __table_args__ = (UniqueConstraint("client_id", "jti", name="uq_used_client_assertions"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    jti: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(index=True)
