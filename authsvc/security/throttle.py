"""A back-off for repeated failures on one key (e.g. a matricule), in the limits' storage.

After ``free`` failures the key waits ``2^(n - free)`` seconds after each new failure, up to
``cap``; failures are forgotten after ``window`` seconds without one. The storage is the one of
``AUTHSVC_RATELIMIT_STORAGE``: Redis when several instances run, so that they share the count.

Limits fail closed: when the storage cannot be reached (Redis down, a timeout), :meth:`wait`,
:meth:`hit` and :meth:`clear` raise :class:`~limits.errors.StorageError` instead of answering
"go ahead"; callers let it through, and the web layer answers ``503 temporarily_unavailable``
(authsvc/web/limits.py). A limit is never skipped because its count cannot be read.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from limits.errors import StorageError
from limits.storage import Storage, storage_from_string

__all__ = ["FailureThrottle", "StorageError", "storage_options"]

#: seconds to connect to Redis and to wait for an answer: a hung Redis must not hang sign-ins
REDIS_TIMEOUT = 1.0


def storage_options(storage_uri: str) -> dict[str, Any]:
    """Options for the limits storage of ``storage_uri``: errors wrapped in ``StorageError``;
    for Redis, short timeouts and a single immediate retry (a connection Redis dropped while it
    restarted is replaced at once; a Redis that is down costs a request about a second, not the
    client library's default of several retries with back-off). Options given in the URL's query
    (``redis://host/0?socket_timeout=2``) win."""
    options: dict[str, Any] = {"wrap_exceptions": True}
    if storage_uri.startswith(("redis://", "rediss://")):
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options.update(
            socket_connect_timeout=REDIS_TIMEOUT,
            socket_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
        )
    return options


class FailureThrottle:
    def __init__(
        self,
        storage_uri: str,
        *,
        prefix: str,
        free: int = 3,
        cap: int = 3600,
        window: int = 3600,
        key_prefix: str = "authsvc",
    ) -> None:
        storage = storage_from_string(storage_uri, **storage_options(storage_uri))
        assert isinstance(storage, Storage)
        self.storage = storage
        self.prefix = prefix
        self.key_prefix = key_prefix
        self.free = free
        self.cap = cap
        self.window = window

    def _key(self, value: str) -> str:
        # keys are hashed: a matricule is personal data, Redis needs not see it
        digest = hashlib.sha256(f"{self.prefix}\n{value}".encode()).hexdigest()[:32]
        return f"{self.key_prefix}:{self.prefix}:{digest}"

    def wait(self, value: str) -> int:
        """Seconds to wait before the next try (0: go ahead); ``StorageError`` if unknown."""
        key = self._key(value) + ":block"
        if self.storage.get(key) <= 0:
            return 0
        return max(1, int(float(self.storage.get_expiry(key)) - time.time()) + 1)

    def hit(self, value: str) -> int:
        """Count a failure; return the wait it imposes."""
        key = self._key(value)
        count = int(self.storage.incr(key, self.window))
        if count <= self.free:
            return 0
        delay = int(min(self.cap, 2 ** (count - self.free)))
        self.storage.clear(key + ":block")
        self.storage.incr(key + ":block", delay)
        return delay

    def clear(self, value: str) -> None:
        key = self._key(value)
        self.storage.clear(key)
        self.storage.clear(key + ":block")
