"""The WSGI entry points for production (docs/deployment.md):

    granian --interface wsgi --factory 'authsvc.wsgi:worker_app' --workers 2 --blocking-threads 4 …
    gunicorn -c gunicorn.conf.py 'authsvc.wsgi:app'

``app`` is built when it is first looked up — by gunicorn in each worker process (``preload_app``
is off), or by anything that imports it — so that importing this module for ``worker_app`` does
not build a second application. ``worker_app`` is for a server that imports its application in
each worker process after the fork and has no hook like gunicorn's ``post_worker_init`` (granian,
``--factory``): it builds the worker's application (its own database pool, key store, PKCS#11
sessions) and starts the worker's outbox thread at once, so that a worker that gets no request
still delivers mail. Served as ``authsvc.wsgi:app`` without ``--factory``, granian works too, and
each worker starts its outbox thread at its first request.

An invalid setting stops the start with one line naming the variable. The exit code is 3,
gunicorn's "worker failed to boot", which makes gunicorn stop instead of starting workers again
and again (granian stops as well, unless ``--respawn-failed-workers`` is given).
"""

from __future__ import annotations

import sys
from typing import Any

from flask import Flask

from . import create_app
from .db import DatabaseMissing
from .errors import ConfigError

WORKER_BOOT_ERROR = 3


def _build() -> Flask:
    try:
        return create_app()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(WORKER_BOOT_ERROR) from None
    except DatabaseMissing as exc:
        print(f"error: {exc}: run `authsvc db upgrade` first", file=sys.stderr)
        raise SystemExit(WORKER_BOOT_ERROR) from None


def worker_app() -> Flask:
    """The application of one worker process, its outbox thread started (granian ``--factory``)."""
    app = _build()
    if app.config.get("AUTHSVC_OUTBOX_WORKER", True):
        app.extensions["authsvc"].outbox_worker.start()
    return app


def __getattr__(name: str) -> Any:
    # PEP 562: ``authsvc.wsgi:app`` is built at its first lookup, once
    if name == "app":
        app = _build()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
