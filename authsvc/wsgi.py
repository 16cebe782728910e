"""The WSGI entry point for production: ``gunicorn 'authsvc.wsgi:app'``.

An invalid setting stops the start with one line naming the variable. The exit code is 3,
gunicorn's "worker failed to boot", which makes gunicorn stop instead of starting workers again
and again.
"""

from __future__ import annotations

import sys

from . import create_app
from .db import DatabaseMissing
from .errors import ConfigError

WORKER_BOOT_ERROR = 3

try:
    app = create_app()
except ConfigError as exc:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(WORKER_BOOT_ERROR) from None
except DatabaseMissing as exc:
    print(f"error: {exc}: run `authsvc db upgrade` first", file=sys.stderr)
    raise SystemExit(WORKER_BOOT_ERROR) from None
