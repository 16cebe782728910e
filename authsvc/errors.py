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
