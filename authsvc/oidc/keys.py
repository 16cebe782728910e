"""The provider's signing keys: ES256 (the default) and RS256 (for clients that need it).

Private keys never leave the key store: in the database they are kept encrypted (Fernet, with a
key-encryption key derived from the instance secret); imported once per process into joserfc key
objects (importing a PEM per signature is what makes naive providers slow). The newest key of
each algorithm signs; older keys stay in the JWKS until every token they signed has expired.

Several instances share the keys through the database: each reloads them every
:data:`RELOAD_EVERY` seconds, and at once when asked to verify a token whose ``kid`` it does not
know yet (a key created by another instance).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from ..audit import service as audit
from ..audit.tags import EventTag
from ..clock import Clock
from ..db import Database
from ..security.secrets import KeyedHasher, Purpose
from .hsm import TokenKeyStore
from .models import SigningKey

log = logging.getLogger("authsvc.keys")

ALGORITHMS = ("ES256", "RS256")
DEFAULT_ALG = "ES256"
RELOAD_EVERY = 30.0
#: how long a relying service (or a cache between) may keep /jwks.json (its Cache-Control)
JWKS_MAX_AGE = 300
#: a new key is published this long before it signs, so that every instance (which reloads
#: every RELOAD_EVERY seconds) serves it, and every relying service that cached the key set for
#: JWKS_MAX_AGE has fetched it again, before any token signed with it exists
PUBLISH_LEAD = timedelta(seconds=JWKS_MAX_AGE + RELOAD_EVERY + 5)
#: a retired key stays published this long: longer than any token it signed can live
PUBLISH_AFTER_RETIREMENT = timedelta(hours=1)
#: PostgreSQL advisory lock taken while keys are created (two instances, or two rotations)
KEYS_LOCK = 0x6B657973

AnyKey = ECKey | RSAKey


def new_private_key(alg: str, kid: str) -> AnyKey:
    parameters: Any = {"kid": kid, "alg": alg, "use": "sig"}
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=parameters, private=True)
    if alg == "RS256":
        return RSAKey.generate_key(2048, parameters=parameters, private=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def new_kid(alg: str, now: datetime) -> str:
    return f"{alg.lower()}-{now:%Y%m%d}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    alg: str
    #: the private key (in the database), or only the public one (on a PKCS#11 token)
    key: AnyKey
    created_at: datetime
    on_token: bool = False


class KeyStore:
    """Signs and verifies the provider's JWTs with the keys of the database."""

    def __init__(
        self,
        db: Database,
        hasher: KeyedHasher,
        clock: Clock,
        token: TokenKeyStore | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.token = token
        self._fernets = [
            Fernet(base64.urlsafe_b64encode(k)) for k in hasher.keys(Purpose.KEY_ENCRYPTION)
        ]
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._forced_at = 0.0
        self._signing: dict[str, LoadedKey] = {}
        self._published: dict[str, LoadedKey] = {}
        self._jwks: dict[str, Any] = {"keys": []}
        self._jwks_json = b'{"keys":[]}'
        self._etag = ""

    # --- keys at rest ---

    def seal(self, key: AnyKey) -> bytes:
        return self._fernets[0].encrypt(key.as_pem(private=True))

    def _open(self, sealed: bytes) -> bytes:
        for fernet in self._fernets:
            try:
                return fernet.decrypt(sealed)
            except Exception:  # noqa: S112 - try the next (fallback) key
                continue
        raise RuntimeError(
            "a signing key cannot be decrypted: was AUTHSVC_SECRET_KEY changed without keeping "
            "the old one in AUTHSVC_SECRET_KEY_FALLBACKS?"
        )

    def create(self, session: Session, alg: str, *, actor: str) -> SigningKey:
        """A new key of ``alg``, which becomes the one that signs; the previous one retires."""
        now = self.clock.now()
        kid = new_kid(alg, now)
        # the previous key keeps signing while the new one is being published everywhere
        handover = now + PUBLISH_LEAD
        session.execute(
            update(SigningKey)
            .where(SigningKey.alg == alg)
            .where(SigningKey.retired_at.is_(None))
            .values(retired_at=handover, expires_at=handover + PUBLISH_AFTER_RETIREMENT)
        )
        if self.token is not None:  # generated on the token; only the public key comes out
            row = SigningKey(
                kid=kid,
                alg=alg,
                public_jwk=self.token.generate(alg, kid),
                private_key=None,
                pkcs11_label=kid,
                created_at=now,
            )
        else:
            private = new_private_key(alg, kid)
            row = SigningKey(
                kid=kid,
                alg=alg,
                public_jwk=private.as_dict(private=False),
                private_key=self.seal(private),
                created_at=now,
            )
        session.add(row)
        session.flush()
        audit.record(
            session,
            EventTag.KEY_CREATED,
            actor=actor,
            subject=f"key:{kid}",
            data={"alg": alg, "kid": kid, "store": "pkcs11" if self.token else "database"},
            clock=self.clock,
        )
        return row

    def _lock_keys(self, session: Session) -> None:
        if self.db.dialect == "postgresql":
            session.execute(text(f"SELECT pg_advisory_xact_lock({KEYS_LOCK})"))

    def rotate(self, *, actor: str) -> list[str]:
        """``authsvc keys rotate``: a new key for every algorithm (signing in PUBLISH_LEAD)."""
        with self.db.transaction() as session:
            self._lock_keys(session)
            kids = [self.create(session, alg, actor=actor).kid for alg in ALGORITHMS]
        self.reload()
        return kids

    def ensure(self) -> None:
        """Create the keys that are missing (first start)."""
        with self.db.transaction() as session:
            self._lock_keys(session)  # instances starting together make one key, not one each
            present = set(
                session.scalars(select(SigningKey.alg).where(SigningKey.retired_at.is_(None)))
            )
            for alg in ALGORITHMS:
                if alg not in present:
                    self.create(session, alg, actor="system")
                    log.info("created the first %s signing key", alg)

    # --- keys in memory ---

    def reload(self) -> None:
        now = self.clock.now()
        with self.db.read_transaction() as session:
            rows = list(
                session.scalars(
                    select(SigningKey).where(
                        (SigningKey.expires_at.is_(None)) | (SigningKey.expires_at > now)
                    )
                )
            )
        if not any(r.retired_at is None for r in rows) or {
            r.alg for r in rows if r.retired_at is None
        } != set(ALGORITHMS):
            self.ensure()
            with self.db.read_transaction() as session:
                rows = list(
                    session.scalars(
                        select(SigningKey).where(
                            (SigningKey.expires_at.is_(None)) | (SigningKey.expires_at > now)
                        )
                    )
                )
        published: dict[str, LoadedKey] = {}
        signing: dict[str, LoadedKey] = {}
        settled: dict[str, LoadedKey] = {}
        for row in sorted(rows, key=lambda r: r.created_at):
            loaded = self._published.get(row.kid) or self._load(row)
            published[row.kid] = loaded
            if row.retired_at is None or row.retired_at > now:
                # as a last resort the oldest live key: the one published the longest
                signing.setdefault(row.alg, loaded)
                if row.created_at <= now - PUBLISH_LEAD:
                    settled[row.alg] = loaded  # the newest published long enough
        signing.update(settled)
        jwks = {"keys": [k.key.as_dict(private=False) for k in published.values()]}
        body = json.dumps(jwks, separators=(",", ":"), sort_keys=True).encode()
        with self._lock:
            self._published, self._signing = published, signing
            self._jwks, self._jwks_json = jwks, body
            self._etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            self._loaded_at = time.monotonic()

    def _load(self, row: SigningKey) -> LoadedKey:
        if row.private_key is None:
            if row.pkcs11_label is None or self.token is None:
                raise RuntimeError(
                    f"signing key {row.kid} is on a PKCS#11 token, and AUTHSVC_SIGNING_KEY_TOKEN "
                    "is not set"
                )
            public: AnyKey = (ECKey if row.alg == "ES256" else RSAKey).import_key(
                dict(row.public_jwk)
            )
            return LoadedKey(row.kid, row.alg, public, row.created_at, on_token=True)
        pem = self._open(row.private_key)
        parameters: Any = {"kid": row.kid, "alg": row.alg, "use": "sig"}
        key: AnyKey = (
            ECKey.import_key(pem, parameters=parameters)
            if row.alg == "ES256"
            else RSAKey.import_key(pem, parameters=parameters)
        )
        return LoadedKey(row.kid, row.alg, key, row.created_at)

    def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at > RELOAD_EVERY or not self._signing:
            self.reload()

    def ready(self) -> None:
        """Load (creating them if needed) the keys, outside any request transaction: creating a
        key writes to the database, which must not happen inside another writer's transaction."""
        self._fresh()

    def signing_key(self, alg: str = DEFAULT_ALG) -> LoadedKey:
        self._fresh()
        return self._signing[alg]

    def jwks(self) -> tuple[bytes, str]:
        """The JWK Set as JSON, and its ETag."""
        self._fresh()
        return self._jwks_json, self._etag

    def key_set(self) -> KeySet:
        self._fresh()
        return KeySet([k.key for k in self._published.values()])

    # --- JWTs ---

    def sign(self, claims: dict[str, Any], *, alg: str = DEFAULT_ALG, typ: str = "JWT") -> str:
        key = self.signing_key(alg)
        header = {"typ": typ, "alg": alg, "kid": key.kid}
        if key.on_token:
            assert self.token is not None
            return self.token.sign_jwt(key.kid, alg, header, claims)
        return jwt.encode(header, claims, key.key)

    def verify(self, token: str, *, typ: str | None = None) -> dict[str, Any]:
        """The claims of a JWT this provider signed; raises ``ValueError`` if it is not one."""
        try:
            header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        except (ValueError, IndexError, RecursionError):
            raise ValueError("not a JWT") from None
        kid = header.get("kid") if isinstance(header, dict) else None
        if not isinstance(kid, str):
            raise ValueError("no key id")
        self._fresh()
        if kid not in self._published and time.monotonic() - self._forced_at > 1.0:
            self._forced_at = time.monotonic()  # at most once a second, whatever the junk
            self.reload()  # a key another instance created since our last look
        key = self._published.get(kid)
        if key is None:
            raise ValueError("unknown signing key")
        if typ is not None and str(header.get("typ", "")).lower() != typ.lower():
            raise ValueError(f"not a {typ} token")
        try:
            decoded = jwt.decode(token, key.key, algorithms=[key.alg])
        except Exception as exc:
            raise ValueError(f"invalid token: {exc.__class__.__name__}") from None
        return dict(decoded.claims)
