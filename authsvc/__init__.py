"""authsvc: the identity provider of a national eHealth platform.

:func:`create_app` builds the Flask application: settings, database, web layer (discovery and
JWKS answered by a WSGI middleware in front of Flask: authsvc/web/fast.py). It does nothing
else — no schema changes, no network calls — so that it starts in well under a second.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from .app import Services
from .config import Settings, load_settings

__version__ = "0.1.0"


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """The application factory.

    :param settings: the instance's settings; read from the environment when not given.
    :param overrides: Flask configuration for tests (``TESTING=True`` …).
    """
    from . import logs
    from .web import init_web
    from .web.application import Application, check_sync

    settings = settings or load_settings()
    logs.configure(settings.log_level, settings.log_format)
    app = Application(__name__, instance_path=str(settings.instance_dir))
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SECRET_KEY_FALLBACKS=list(settings.secret_key_fallbacks),
        MAX_CONTENT_LENGTH=64 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.is_https,
        JSON_SORT_KEYS=False,
    )
    if settings.trusted_proxies > 0:
        # client address, scheme and host as the trusted proxies saw them (X-Forwarded-*)
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    services = overrides.pop("SERVICES", None) or Services.from_settings(settings)
    app.config.update(overrides)
    app.extensions["authsvc"] = services
    init_web(app)
    check_sync(app)
    # discovery and JWKS answered before Flask (and before ProxyFix: they depend on no address)
    from .web.fast import FastPath

    start_outbox = None
    if app.config.get("AUTHSVC_OUTBOX_WORKER", True):
        start_outbox = lambda: services.outbox_worker.start()  # noqa: E731 - at its first use
    app.wsgi_app = FastPath(app.wsgi_app, services, on_first_request=start_outbox)  # type: ignore[method-assign]
    return app
