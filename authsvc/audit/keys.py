"""The keys of the audit chain: HMAC-SHA-256 keys derived from the instance secret.

The chain is keyed, so that someone who can write to the database but does not hold the instance
secret cannot forge or recompute events. Each event names the key it was linked with (``key_id``,
a fingerprint of the key, never the key); after a change of ``AUTHSVC_SECRET_KEY``, the old secret
in ``AUTHSVC_SECRET_KEY_FALLBACKS`` keeps the older events verifiable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..security.secrets import KeyedHasher, Purpose


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"authsvc audit key id\n" + key).hexdigest()[:16]


@dataclass(frozen=True)
class AuditKeys:
    current_id: str
    by_id: dict[str, bytes]

    @property
    def current(self) -> bytes:
        return self.by_id[self.current_id]

    @classmethod
    def from_hasher(cls, hasher: KeyedHasher) -> AuditKeys:
        keys = hasher.keys(Purpose.AUDIT_CHAIN)
        by_id: dict[str, bytes] = {}
        for key in keys:
            by_id.setdefault(key_id(key), key)
        return cls(current_id=key_id(keys[0]), by_id=by_id)
