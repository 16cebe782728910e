"""Per-IP request limits (SECURITY "Guessing and enumeration"), with Flask-Limiter.

Limits are kept in ``AUTHSVC_RATELIMIT_STORAGE`` (``memory://`` for one process, ``redis://…``
when several instances run, so that adding instances does not multiply them). Every limit answers
``429`` with ``Retry-After``. The per-letter, per-code and per-account limits that matter most are
kept in the database by the services themselves; these are the net on top.

Limits fail closed. When the storage cannot be reached (Redis down or not answering within a
second), a limited endpoint — every one of them guards a secret: sign-in, activation, email codes,
password change — answers ``503 temporarily_unavailable`` with ``Retry-After``, and the log says
why; it never serves the request unlimited. Endpoints without a limit (discovery, JWKS, token,
userinfo, introspection, /healthz) do not touch the storage and keep working. The per-matricule
back-off (:class:`~authsvc.security.throttle.FailureThrottle`) fails closed the same way.
``AUTHSVC_RATELIMIT_PREFIX`` (default ``authsvc``) prefixes every key, so that deployments can
share one Redis.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from limits.errors import StorageError
from redis.exceptions import RedisError

from ..errors import ConfigError
from ..security.throttle import storage_options
from .errors import error_response

log = logging.getLogger("authsvc.limits")

#: what a request refused because the limits' storage is down is told to wait (seconds)
STORAGE_DOWN_RETRY_AFTER = 10

#: endpoint → limits (Flask-Limiter's notation)
LIMITS: dict[str, str] = {
    "activation_api.start": "10 per minute; 60 per hour",
    "activation_api.email": "10 per minute",
    "activation_api.verify": "20 per minute",
    "activation_api.password": "20 per minute",
    "activation_api.smartcard": "20 per minute",
    "login_api.password": "30 per minute; 300 per hour",
    "login_api.smartcard": "30 per minute",
    "account_api.password": "20 per minute; 200 per hour",
}


def init_app(app: Flask, storage_uri: str, *, key_prefix: str | None = None) -> Limiter:
    if key_prefix is None:
        services = app.extensions.get("authsvc")
        key_prefix = services.settings.ratelimit_prefix if services is not None else "authsvc"
    options: Any = storage_options(storage_uri)
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=storage_uri,
        storage_options=options,
        # our own Retry-After (below): the extension's would also overwrite the one that the
        # services' own limits (per letter, per flow) give
        headers_enabled=False,
        strategy="moving-window",
        key_prefix=key_prefix,
    )

    @app.errorhandler(RateLimitExceeded)
    def _limited(exc: RateLimitExceeded) -> Response:
        current = limiter.current_limit
        wait = int(current.reset_at - time.time()) + 1 if current is not None else 60
        return error_response(
            429,
            "too_many_requests",
            "Too many requests from this address; wait before trying again.",
            {"Retry-After": str(max(1, wait))},
        )

    @app.errorhandler(StorageError)
    @app.errorhandler(RedisError)
    def _storage_down(exc: Exception) -> Response:
        # fail closed: a limit whose count cannot be read or written is not skipped
        cause = exc.storage_error if isinstance(exc, StorageError) else exc
        log.error(
            "rate-limit storage (AUTHSVC_RATELIMIT_STORAGE) unreachable: %s: %s; %s %s refused "
            "with 503 (limits fail closed)",
            cause.__class__.__name__,
            cause,
            request.method,
            request.endpoint or request.path,
        )
        return error_response(
            503,
            "temporarily_unavailable",
            "The service is temporarily unavailable. Please try again in a moment.",
            {"Retry-After": str(STORAGE_DOWN_RETRY_AFTER)},
        )

    for endpoint, limit in LIMITS.items():
        view = app.view_functions.get(endpoint)
        if view is not None:
            app.view_functions[endpoint] = limiter.limit(limit)(view)  # type: ignore[assignment]
    # Every limit is a route's own (above): its decorator checks it. There are no default,
    # application or blueprint limits, which are all the extension's before_request hook looks
    # for; on every request (the token endpoint, introspection…) it found none, at a cost.
    # Nor do its other hooks serve here: after each request it deducts the limits declared with
    # ``deduct_when`` (none is) and adds the rate-limit headers (``headers_enabled=False``), and
    # at teardown it resets its per-request state, which lives on the request's context and goes
    # with it. Each ran on every request.
    # Should one of those features ever be configured, it would do nothing without its hooks:
    # refused here, loudly, rather than silently unenforced.
    served_by_hooks = [key for key in _HOOK_FEATURES if app.config.get(key)]
    if served_by_hooks:
        raise ConfigError(
            f"{', '.join(served_by_hooks)}: authsvc's limits are the routes' own "
            "(authsvc/web/limits.py LIMITS); Flask-Limiter's request hooks are not registered"
        )
    registries: list[dict[Any, list[Any]]] = [
        app.before_request_funcs,
        app.after_request_funcs,
        app.teardown_request_funcs,
    ]
    for registry in registries:
        hooks = registry.get(None, [])
        hooks[:] = [hook for hook in hooks if not _belongs_to(hook, limiter)]
    app.extensions["authsvc_limiter"] = limiter
    return limiter


#: Flask-Limiter settings that only its request hooks act on (default, application and meta
#: limits, deductions after the response, the rate-limit headers, the in-memory fallback)
_HOOK_FEATURES = (
    "RATELIMIT_DEFAULT",
    "RATELIMIT_APPLICATION",
    "RATELIMIT_META",
    "RATELIMIT_DEFAULTS_DEDUCT_WHEN",
    "RATELIMIT_APPLICATION_DEDUCT_WHEN",
    "RATELIMIT_HEADERS_ENABLED",
    "RATELIMIT_IN_MEMORY_FALLBACK",
    "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED",
)


def _belongs_to(hook: Any, limiter: Limiter) -> bool:
    """Whether a request hook is one the extension registered (a method of ``limiter``, or a
    ``functools.partial`` of one that binds it)."""
    if getattr(hook, "__self__", None) is limiter:
        return True
    return isinstance(hook, functools.partial) and hook.args[:1] == (limiter,)
