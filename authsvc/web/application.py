"""The Flask application class of authsvc: Flask, less two per-request costs it does not need.

- **No Flask session.** authsvc keeps its sessions in the database behind cookies of its own
  (``authsvc_session``, ``authsvc_login``: authsvc/sessions/); Flask's signed-cookie session is
  never used. Flask would still look for its cookie and build a session object on every request;
  here every request gets Flask's null session, which refuses to be written to (a use of
  ``flask.session`` fails loudly instead of setting a cookie nobody reads).
- **No async views or hooks.** authsvc is a WSGI application; Flask checks every view and every
  request hook on every request (``ensure_sync``: ``inspect.iscoroutinefunction``, ~11 times per
  request here). :func:`check_sync` checks them all once, when the application is built, and
  refuses a coroutine function there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface


class NoSessions(SecureCookieSessionInterface):
    """Flask's session interface, never opening a session: each request gets the null one."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        return None  # Flask then makes the null session (make_null_session)


class Application(Flask):
    session_interface = NoSessions()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return func  # every view and hook is a plain function: checked once by check_sync


def check_sync(app: Flask) -> None:
    """Refuse, at start, a view or request hook that is a coroutine function (the application
    would call it without awaiting it)."""

    def every() -> Iterable[Callable[..., Any]]:
        yield from app.view_functions.values()
        for registry in (
            app.before_request_funcs,
            app.after_request_funcs,
            app.teardown_request_funcs,
            app.url_value_preprocessors,
            app.url_default_functions,
            app.template_context_processors,
        ):
            for hooks in registry.values():
                yield from hooks
        yield from app.teardown_appcontext_funcs
        for handlers in app.error_handler_spec.values():
            for by_class in handlers.values():
                yield from by_class.values()

    for func in every():
        target = inspect.unwrap(getattr(func, "func", func))  # a partial, a decorated view
        if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(func):
            raise TypeError(f"authsvc serves no async views or hooks: {func!r}")


__all__ = ["Application", "NoSessions", "check_sync"]
