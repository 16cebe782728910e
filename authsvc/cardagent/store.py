"""Authentication requests: created by a trusted page, answered on the agent's PIN page.

A request lives :data:`~authsvc.cardagent.config.REQUEST_LIFETIME` (5 minutes) in memory, never on
disk. Its result — the authentication token, or why there is none — is handed out once, to the
origin that asked; after that, or a lifetime later, the request is forgotten.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from ..clock import Clock

#: Requests kept at most at once (pending or waiting to be collected).
MAX_REQUESTS = 32


class State(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class TooManyRequests(Exception):
    pass


@dataclass
class AuthRequest:
    """One challenge to sign for one origin; its state changes only through the store."""

    id: str
    origin: str
    nonce: str
    csrf_token: str = field(repr=False)
    created_at: datetime
    expires_at: datetime
    state: State = State.PENDING
    last_error: str | None = None
    error: str | None = None
    error_description: str | None = None
    auth_token: dict[str, str] | None = field(default=None, repr=False)
    #: the PIN page is working with the card for this request: it does not expire meanwhile
    signing: bool = False
    #: serialises the PIN page's submissions of this request (a double click signs once)
    submission: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def status(self) -> dict[str, Any]:
        """The answer of ``GET /v1/authenticate/<id>``."""
        if self.state is State.DONE:
            return {"status": "done", "auth_token": self.auth_token}
        if self.state is State.FAILED:
            return {
                "status": "failed",
                "error": self.error,
                "error_description": self.error_description,
            }
        answer: dict[str, Any] = {"status": "pending", "expires_at": iso(self.expires_at)}
        if self.last_error:
            answer["last_error"] = self.last_error
        return answer


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


EXPIRED = "The request expired before the card signed it."


class RequestStore:
    """The agent's requests, in memory, safe to use from the server's threads."""

    def __init__(
        self, clock: Clock, lifetime: timedelta, *, max_requests: int = MAX_REQUESTS
    ) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.max_requests = max_requests
        self._requests: dict[str, AuthRequest] = {}
        self._lock = threading.Lock()

    def create(self, origin: str, nonce: str) -> AuthRequest:
        now = self.clock.now()
        with self._lock:
            self._purge(now)
            if len(self._requests) >= self.max_requests:
                raise TooManyRequests()
            request = AuthRequest(
                id=secrets.token_urlsafe(32),
                origin=origin,
                nonce=nonce,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + self.lifetime,
            )
            self._requests[request.id] = request
            return request

    def get(self, request_id: str) -> AuthRequest | None:
        """The request, a pending one past its lifetime turned into ``failed: expired``."""
        with self._lock:
            self._purge(self.clock.now())
            request = self._requests.get(request_id)
            if request is not None:
                self._expire_if_due(request)
            return request

    # -- state changes --

    def start_signing(self, request: AuthRequest) -> bool:
        """Mark the request as being signed; ``False`` when it is no longer pending."""
        with self._lock:
            self._expire_if_due(request)
            if request.state is not State.PENDING:
                return False
            request.signing = True
            return True

    def succeed(self, request: AuthRequest, token: dict[str, str]) -> None:
        with self._lock:
            request.signing = False
            if request.state is State.PENDING:
                request.auth_token = token
                request.last_error = None
                request.state = State.DONE

    def retry(self, request: AuthRequest, last_error: str | None) -> None:
        """The attempt failed but the request stays open (wrong PIN, card removed …).

        ``last_error=None`` keeps the previous one (nothing reached the card).
        """
        with self._lock:
            request.signing = False
            if request.state is State.PENDING:
                if last_error is not None:
                    request.last_error = last_error
                self._expire_if_due(request)

    def fail(self, request: AuthRequest, error: str, description: str) -> bool:
        """End a pending request with ``error``; ``False`` when it had already ended."""
        with self._lock:
            request.signing = False
            if request.state is not State.PENDING:
                return False
            request.state = State.FAILED
            request.error = error
            request.error_description = description
            return True

    def collect(self, request: AuthRequest) -> dict[str, Any]:
        """The request's status; a final one (done or failed) is handed out once, then forgotten."""
        with self._lock:
            self._expire_if_due(request)
            answer = request.status()
            if request.state is not State.PENDING:
                self._requests.pop(request.id, None)
            return answer

    def forget(self, request: AuthRequest) -> None:
        with self._lock:
            self._requests.pop(request.id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._requests)

    # -- with the lock held --

    def _expire_if_due(self, request: AuthRequest) -> None:
        if (
            request.state is State.PENDING
            and not request.signing
            and self.clock.now() >= request.expires_at
        ):
            request.state = State.FAILED
            request.error = "expired"
            request.error_description = EXPIRED

    def _purge(self, now: datetime) -> None:
        """Forget requests a lifetime past their expiry, whatever their state."""
        for request_id, request in list(self._requests.items()):
            if now >= request.expires_at + self.lifetime:
                del self._requests[request_id]
