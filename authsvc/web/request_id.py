"""A request id on every response and in every log record of the request.

The proxy's ``X-Request-Id`` is kept when it looks sane (1 to 64 characters of ``A-Z a-z 0-9 . _
-``: nothing that could forge a log line); otherwise a new one is made (32 hex digits). The id is
answered in ``X-Request-Id`` and set in :data:`authsvc.logs.request_id` for the time of the
request, so that every record logged meanwhile carries it.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from .. import logs

HEADER = "X-Request-Id"
SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_of(given: str | None) -> str:
    """The proxy's id when it looks sane, else a new one."""
    if given and SANE.fullmatch(given):
        return given
    return uuid.uuid4().hex


def init_request_id(app: Flask) -> None:
    """Register first, so that every other hook, and every log line they write, has the id."""

    @app.before_request
    def _bind_request_id() -> None:
        g.request_id = request_id_of(request.headers.get(HEADER))
        g.request_id_token = logs.request_id.set(g.request_id)

    @app.after_request
    def _answer_request_id(response: Response) -> Response:
        if "request_id" in g:
            response.headers[HEADER] = g.request_id
        return response

    @app.teardown_request
    def _unbind_request_id(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            try:
                logs.request_id.reset(token)
            except ValueError:  # set in another context: forget it all the same
                logs.request_id.set(None)


__all__ = ["HEADER", "init_request_id", "request_id_of"]
