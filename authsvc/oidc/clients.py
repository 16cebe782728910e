"""Relying services: registering them (``authsvc clients create``) and what Authlib asks of them.

A client's secret is shown once, at registration, and kept only as an HMAC under the client-secret
key: checking it costs one keyed SHA-256 and a constant-time comparison (Argon2 here would cap the
token endpoint at a few dozen requests per second and protects nothing: the secret is random).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin
from joserfc.jwk import KeySet
from sqlalchemy import Row
from sqlalchemy.orm import Session

from ..audit import service as audit
from ..audit.tags import EventTag
from ..clock import Clock
from ..errors import InvalidInput
from ..security.secrets import KeyedHasher, Purpose, random_token
from .models import Client

#: the scopes every client may ask for (INTERFACE §2 `--scope`: the others must be granted)
BASE_SCOPES = ("openid", "profile", "email", "professional")
#: the scopes a client may be granted beyond those
EXTRA_SCOPES = ("matricule", "helpdesk")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
#: what a ``private_key_jwt`` client may sign its assertions with (asymmetric only: a shared-secret
#: HS256 assertion would make the registered "public" key a secret kept in clear). ``EdDSA`` is
#: RFC 8037's name for Ed25519, deprecated by RFC 9864 but still what most clients send.
ASSERTION_ALGORITHMS = ("ES256", "RS256", "PS256", "Ed25519", "EdDSA")
#: key types those algorithms use, and the members that only a private key has
_PUBLIC_KEY_TYPES = ("EC", "RSA", "OKP")
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
SECRET_METHODS = ("client_secret_basic", "client_secret_post")


@dataclass
class ClientView(ClientMixin):  # type: ignore[misc]
    """A registered client as Authlib sees it: a plain object, detached from any session."""

    client_id: str
    name: str
    secret_hash: str | None
    token_endpoint_auth_method: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    backchannel_logout_uri: str | None
    extra_scopes: list[str]
    grant_types: list[str]
    require_acr: str | None
    subject_type: str
    id_token_signed_response_alg: str
    jwks: dict[str, Any] | None
    hasher: KeyedHasher = field(repr=False)

    @classmethod
    def of(cls, row: Client | Row[Any], hasher: KeyedHasher) -> ClientView:
        """From a :class:`Client` or a row of the ``clients`` table."""
        return cls(
            client_id=row.client_id,
            name=row.name,
            secret_hash=row.secret_hash,
            token_endpoint_auth_method=row.token_endpoint_auth_method,
            redirect_uris=list(row.redirect_uris),
            post_logout_redirect_uris=list(row.post_logout_redirect_uris),
            backchannel_logout_uri=row.backchannel_logout_uri,
            extra_scopes=list(row.extra_scopes),
            grant_types=list(row.grant_types),
            require_acr=row.require_acr,
            subject_type=row.subject_type,
            id_token_signed_response_alg=row.id_token_signed_response_alg,
            jwks=row.jwks,
            hasher=hasher,
        )

    # --- Authlib's ClientMixin ---

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # Never guessed: RFC 9700 — the redirect URI is compared exactly, and must be sent.
        return None

    @property
    def allowed_scopes(self) -> set[str]:
        return {*BASE_SCOPES, *self.extra_scopes}

    def get_allowed_scope(self, scope: str) -> str:
        """The scopes asked for that this client may have, each once, in the order asked."""
        if not scope:
            return ""
        return " ".join(dict.fromkeys(s for s in scope.split() if s in self.allowed_scopes))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact string comparison

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.secret_hash or not isinstance(client_secret, str):
            return False
        return self.hasher.verify(Purpose.CLIENT_SECRET, client_secret, self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if method == "client_assertion_jwt":
            method = "private_key_jwt"
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    @property
    def client_metadata(self) -> dict[str, Any]:
        return {"post_logout_redirect_uris": self.post_logout_redirect_uris}

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"  # noqa: S105 - a method name

    def key_set(self) -> KeySet:
        if not self.jwks:
            raise ValueError("the client has no registered keys")
        return KeySet.import_key_set(self.jwks)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Registration:
    client_id: str
    client_secret: str | None

    def to_dict(self) -> dict[str, str | None]:
        return {"client_id": self.client_id, "client_secret": self.client_secret}


def _check_uri(uri: str, what: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidInput(f"{what} must be an absolute http(s) URI: {uri!r}")
    if parts.fragment or "#" in uri:
        raise InvalidInput(f"{what} must not have a fragment: {uri!r}")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise InvalidInput(f"{what} must use https (http only on loopback): {uri!r}")
    return uri


def register(
    session: Session,
    *,
    name: str,
    redirect_uris: Sequence[str],
    public: bool = False,
    post_logout_redirect_uris: Sequence[str] = (),
    backchannel_logout_uri: str | None = None,
    scopes: Sequence[str] = (),
    require_acr: str | None = None,
    subject_type: str = "public",
    grants: Sequence[str] = (),
    auth_method: str | None = None,
    jwks: dict[str, Any] | None = None,
    id_token_alg: str = "ES256",  # noqa: S107 - an algorithm name
    hasher: KeyedHasher,
    actor: str,
    clock: Clock,
) -> Registration:
    """Register a relying service (INTERFACE §2 ``authsvc clients create``)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("a client needs a name of at most 200 characters")
    grant_types = ["authorization_code", "refresh_token"]
    for grant in grants:
        if grant != "client_credentials":
            raise InvalidInput(f"unknown grant {grant!r} (only client_credentials can be added)")
        grant_types.append(grant)
    if not redirect_uris and "client_credentials" not in grant_types:
        raise InvalidInput("a client that signs people in needs at least one --redirect-uri")
    if not redirect_uris:
        grant_types = ["client_credentials"]
    method = auth_method or ("none" if public else "client_secret_basic")
    if method not in AUTH_METHODS:
        raise InvalidInput(f"unknown token endpoint auth method {method!r}")
    if public and method != "none":
        raise InvalidInput("a public client authenticates with no secret (method none)")
    if method == "none" and "client_credentials" in grant_types:
        raise InvalidInput("a public client cannot use client_credentials")
    if method == "private_key_jwt":
        if not jwks or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
            raise InvalidInput("private_key_jwt needs the client's public keys (--jwks FILE)")
        try:
            KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        except Exception as exc:
            raise InvalidInput(f"the client's JWK Set cannot be read: {exc}") from None
        _check_public_keys(jwks["keys"])
    unknown = [s for s in scopes if s not in EXTRA_SCOPES and s not in BASE_SCOPES]
    if unknown:
        raise InvalidInput(f"unknown scope(s): {', '.join(unknown)}")
    if require_acr not in (None, "low", "high"):
        raise InvalidInput("--require-acr is low or high")
    if subject_type not in ("public", "pairwise"):
        raise InvalidInput("--subject-type is public or pairwise")
    if id_token_alg not in ("ES256", "RS256"):
        raise InvalidInput("ID tokens are signed with ES256 or RS256")
    uris = [_check_uri(u, "a redirect URI") for u in redirect_uris]
    logout_uris = [_check_uri(u, "a post-logout redirect URI") for u in post_logout_redirect_uris]
    backchannel = (
        _check_uri(backchannel_logout_uri, "the back-channel logout URI")
        if backchannel_logout_uri
        else None
    )

    client_id = random_token(18)
    secret = random_token(32) if method in SECRET_METHODS else None
    now = clock.now()
    session.add(
        Client(
            client_id=client_id,
            name=name,
            secret_hash=hasher.hash(Purpose.CLIENT_SECRET, secret) if secret else None,
            token_endpoint_auth_method=method,
            redirect_uris=uris,
            post_logout_redirect_uris=logout_uris,
            backchannel_logout_uri=backchannel,
            extra_scopes=[s for s in scopes if s in EXTRA_SCOPES],
            grant_types=grant_types,
            require_acr=require_acr,
            subject_type=subject_type,
            id_token_signed_response_alg=id_token_alg,
            jwks=jwks,
            created_at=now,
        )
    )
    session.flush()
    audit.record(
        session,
        EventTag.CLIENT_REGISTERED,
        actor=actor,
        subject=f"client:{client_id}",
        data={
            "name": name,
            "auth_method": method,
            "grant_types": grant_types,
            "scopes": list(scopes),
            "require_acr": require_acr,
            "subject_type": subject_type,
        },
        clock=clock,
    )
    return Registration(client_id, secret)


def _check_public_keys(keys: list[Any]) -> None:
    """A ``private_key_jwt`` client registers public keys: EC, RSA or OKP, never a private key or a
    shared secret (``kty`` ``oct``)."""
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") not in _PUBLIC_KEY_TYPES:
            raise InvalidInput(
                "private_key_jwt needs public keys of type EC, RSA or OKP (a shared secret, "
                "kty oct, is not a key pair)"
            )
        if any(member in key for member in _PRIVATE_MEMBERS):
            raise InvalidInput("the client's JWK Set holds a private key: give only public keys")
