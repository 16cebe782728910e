"""Errors as JSON: ``{"error", "error_description"}`` with a 4xx, never a stack trace.

Known errors (:class:`AuthsvcError`, HTTP errors of werkzeug) keep their status; a database that
cannot be reached is a clean 503 with ``Retry-After``; anything else is logged with its traceback
and answered with a generic 500 that reveals nothing.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import AuthsvcError, ConfigError

log = logging.getLogger("authsvc.web")

HTTP_ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "access_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def error_response(
    status: int, code: str, description: str, headers: dict[str, str] | None = None
) -> Response:
    response = jsonify({"error": code, "error_description": description})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def init_app(app: Flask) -> None:
    @app.before_request
    def _refuse_oversized_bodies() -> None:
        # Before routing decides anything: a body over the limit is refused whatever the path.
        limit = app.config.get("MAX_CONTENT_LENGTH")
        if limit is not None and (request.content_length or 0) > limit:
            raise RequestEntityTooLarge()

    @app.errorhandler(AuthsvcError)
    def _authsvc_error(exc: AuthsvcError) -> Response:
        if isinstance(exc, ConfigError):
            # A setting that became unusable while serving (e.g. a broken trust-anchor file):
            # the operator reads the detail in the log; the person is told to come back later,
            # and never sees a server path.
            log.error("cannot serve %s %s: %s", request.method, request.path, exc.description)
            return error_response(
                503,
                "temporarily_unavailable",
                "The service is temporarily unavailable. Please try again later.",
                {"Retry-After": "60"},
            )
        return error_response(exc.status, exc.code, exc.description)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = HTTP_ERROR_CODES.get(status, "invalid_request" if status < 500 else "server_error")
        description = exc.description or exc.name
        if status == 413:
            description = "The request body is larger than 64 KiB."
        headers = dict(exc.get_headers()) if status == 405 else {}
        headers.pop("Content-Type", None)
        return error_response(status, code, description, headers)

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def _db_unavailable(exc: Exception) -> Response:
        if isinstance(exc, DBAPIError) and not _connection_lost(exc):
            log.error("database error: %s", exc.__class__.__name__, exc_info=exc)
        else:  # the database is down or restarting: one line per request, no traceback
            log.warning("database unavailable: %s", _first_line(exc))
        return error_response(
            503,
            "temporarily_unavailable",
            "The service is temporarily unavailable. Please try again in a moment.",
            {"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "server_error", "An unexpected error occurred.")


#: SQLSTATE classes of a lost or refused connection: 08 connection exception, 57P operator
#: intervention (the server shutting down or restarting)
_CONNECTION_STATES = ("08", "57P")


def _connection_lost(exc: DBAPIError) -> bool:
    """The database cannot be reached (not a query that went wrong): connecting failed, the
    server ended the connection, or the pool found it dead."""
    if exc.connection_invalidated:
        return True
    if not hasattr(exc.orig, "sqlstate"):  # not psycopg (SQLite: locked, disk I/O …)
        return False
    state = getattr(exc.orig, "sqlstate", None)  # None: psycopg could not connect, or lost it
    return state is None or str(state).startswith(_CONNECTION_STATES)


def _first_line(exc: Exception) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    text = str(cause).strip().splitlines()
    return f"{cause.__class__.__name__}: {text[0]}" if text else cause.__class__.__name__
