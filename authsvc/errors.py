"""The error hierarchy of authsvc.

Every error a person or a client may see is an :class:`AuthsvcError`: it carries a stable machine
code (the ``error`` of INTERFACE §4), a sentence for a person (``error_description``) and the HTTP
status the web layer answers with. Anything else that escapes a request is a bug and is answered
with a generic 500 that reveals nothing.
"""

from __future__ import annotations


class AuthsvcError(Exception):
    """Root of the errors that are safe to show.

    :param description: a sentence for a person; never a secret, never a stack trace.
    """

    code: str = "invalid_request"
    status: int = 400

    def __init__(self, description: str, *, code: str | None = None, status: int | None = None):
        super().__init__(description)
        self.description = description
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.description}


class FlowError(AuthsvcError):
    """An answer of a flows API (activation, sign-in, account; INTERFACE §4): the ``error`` code,
    its sentence and HTTP status, the policy's ``reason`` for a refused password, and the seconds
    to wait (``Retry-After``) with a 429."""

    def __init__(
        self,
        code: str,
        description: str,
        *,
        status: int = 400,
        reason: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(description, code=code, status=status)
        self.reason = reason
        self.retry_after = retry_after


class ConfigError(AuthsvcError):
    """A setting is invalid; the message names the variable."""

    code = "configuration_error"
    status = 500


class NotFound(AuthsvcError):
    code = "not_found"
    status = 404


class Conflict(AuthsvcError):
    code = "conflict"
    status = 409


class InvalidInput(AuthsvcError):
    code = "invalid_request"
    status = 400


class ServiceUnavailable(AuthsvcError):
    code = "temporarily_unavailable"
    status = 503
