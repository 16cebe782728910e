"""The web layer: thin views over services, JSON errors, security headers, limits."""

from __future__ import annotations

from flask import Flask, current_app

from ..app import Services


def services() -> Services:
    """The services of the running application (views only; services never call this)."""
    return current_app.extensions["authsvc"]  # type: ignore[no-any-return]


def init_web(app: Flask) -> None:
    from ..account import views as account
    from ..activation import views as activation
    from ..helpdesk import api as helpdesk_api
    from ..helpdesk import console as helpdesk_console
    from ..login import views as login
    from ..oidc import views as oidc
    from . import errors, headers, health, limits
    from .metrics import init_metrics
    from .request_id import init_request_id

    init_request_id(app)  # first: every later hook and log line has the request id
    init_metrics(app)
    errors.init_app(app)
    headers.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(activation.api)
    app.register_blueprint(activation.pages)
    app.register_blueprint(login.api)
    app.register_blueprint(login.pages)
    app.register_blueprint(oidc.bp)
    app.register_blueprint(account.api)
    app.register_blueprint(account.pages)
    app.register_blueprint(helpdesk_api.bp)
    app.register_blueprint(helpdesk_console.bp)
    services_of(app).oidc.init_app(app)
    limits.init_app(app, services_of(app).settings.ratelimit_storage)
    if app.config.get("AUTHSVC_OUTBOX_WORKER", True):
        _start_worker_on_first_request(app)


def services_of(app: Flask) -> Services:
    return app.extensions["authsvc"]  # type: ignore[no-any-return]


def _start_worker_on_first_request(app: Flask) -> None:
    """Deliver the outbox from a thread of each serving process.

    Started at the first request rather than at import, so that it lives in the server's worker
    processes (not in a master that forks them). This is the fallback: gunicorn.conf.py's
    ``post_worker_init`` and granian's ``--factory 'authsvc.wsgi:worker_app'`` start it as soon
    as the worker has built its application, and a first request answered before Flask
    (discovery, JWKS: authsvc/web/fast.py) starts it too.
    """

    @app.before_request
    def _start_outbox_worker() -> None:
        services_of(app).outbox_worker.start()
