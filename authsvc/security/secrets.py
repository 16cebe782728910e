"""Keyed hashes of one-time secrets, and the random codes themselves.

SECURITY "Secrets at rest": activation codes, email codes, refresh tokens and client secrets are
stored only as HMAC-SHA-256 under a key derived (HKDF) from the instance secret, one per purpose (so
that a hash made for one purpose is worthless for another), and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from enum import StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class Purpose(StrEnum):
    """One derived key per kind of secret (the itsdangerous idea of a salt per purpose)."""

    ACTIVATION_CODE = "activation-code"
    EMAIL_CODE = "email-code"
    REFRESH_TOKEN = "refresh-token"  # noqa: S105 - a purpose name
    CLIENT_SECRET = "client-secret"  # noqa: S105 - a purpose name
    KEY_ENCRYPTION = "key-encryption"
    OUTBOX = "outbox"
    AUDIT_CHAIN = "audit-chain"
    PAIRWISE = "pairwise-subject"
    AUTHORIZATION_CODE = "authorization-code"
    SESSION_COOKIE = "session-cookie"
    FLOW_BINDING = "flow-binding"
    LOG_PSEUDONYM = "log-pseudonym"


def derive_key(secret: bytes, purpose: Purpose) -> bytes:
    """HKDF-SHA-256 (RFC 5869) of the instance secret, with the purpose as ``info``."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"authsvc/v1/" + purpose.encode()
    ).derive(secret)


class KeyedHasher:
    """HMAC-SHA-256 under a key derived from the instance secret, one key per :class:`Purpose`.

    :param secret_key: the current instance secret (``AUTHSVC_SECRET_KEY``);
    :param fallbacks: earlier secrets (``AUTHSVC_SECRET_KEY_FALLBACKS``): hashes they made still
        verify, new ones are made with the current secret.
    """

    def __init__(self, secret_key: bytes, fallbacks: Iterable[bytes] = ()) -> None:
        if len(secret_key) < 32:
            raise ValueError("the instance secret must be at least 32 bytes")
        self._secrets = [secret_key, *fallbacks]
        self._keys = {purpose: derive_key(secret_key, purpose) for purpose in Purpose}
        self._old = {
            purpose: [derive_key(old, purpose) for old in self._secrets[1:]] for purpose in Purpose
        }

    def key(self, purpose: Purpose) -> bytes:
        """The derived key itself, for uses other than hashing (e.g. encrypting at rest)."""
        return self._keys[purpose]

    def keys(self, purpose: Purpose) -> list[bytes]:
        """The current key, then the keys of the fallback secrets."""
        return [self._keys[purpose], *self._old[purpose]]

    def hash(self, purpose: Purpose, value: str) -> str:
        """The hex HMAC of ``value``: what is stored instead of the secret."""
        return hmac.new(self._keys[purpose], value.encode("utf-8"), hashlib.sha256).hexdigest()

    def pseudonym(self, value: str) -> str:
        """A short keyed stand-in for a personal identifier in the logs (a matricule is a national
        identification number): the same value gives the same pseudonym on every instance sharing
        the secret, so log lines correlate, and nothing in the log reveals the value."""
        return "p-" + self.hash(Purpose.LOG_PSEUDONYM, value)[:12]

    def verify(self, purpose: Purpose, value: str, stored: str) -> bool:
        """Constant-time check of ``value`` against a stored hash (current key, then fallbacks)."""
        data = value.encode("utf-8")
        ok = False
        for key in self.keys(purpose):
            ok |= hmac.compare_digest(hmac.new(key, data, hashlib.sha256).hexdigest(), stored)
        return ok


#: The activation-code alphabet: digits and capitals without the look-alikes 0/O, 1/I/L (31).
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


def equal(given: str, expected: str) -> bool:
    """Constant-time comparison of a value the client sent with the expected one.

    As UTF-8 bytes: ``hmac.compare_digest`` refuses ``str`` with non-ASCII characters (a
    ``TypeError``, which was a 500 for a CSRF token of ``"é"``); lone surrogates, which JSON can
    carry, are encoded as they are and simply do not match."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def random_code(length: int, alphabet: str = CODE_ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def random_digits(length: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(length))


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random identifier (``nbytes`` × 8 bits of entropy)."""
    return secrets.token_urlsafe(nbytes)
