"""Logging: one record per line on stderr, from the ``authsvc`` logger and its children.

Secrets are never passed to a logger. The level is ``AUTHSVC_LOG_LEVEL`` (default INFO); the format
is ``AUTHSVC_LOG_FORMAT``: ``text`` (the default, ``time LEVEL logger: message``) or ``json`` (one
JSON object per line: ``time``, ``level``, ``logger``, ``message``, ``request_id``, and for a record
with an exception its type in ``exception`` and its traceback in ``traceback``).

Every record logged while a request is served carries that request's id (``record.request_id``,
from :data:`request_id`, which the web layer sets: authsvc/web/request_id.py); outside a request
it is ``None``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_handler: logging.Handler | None = None

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")

#: The id of the request being served in this thread (or task), ``None`` outside a request.
request_id: ContextVar[str | None] = ContextVar("authsvc_request_id", default=None)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (not at configuration)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (``record.request_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.__dict__["request_id"] = request_id.get()
        return True


#: The attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "request_id", "taskName"}


def _type_name(exc_type: type[BaseException]) -> str:
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (ASCII: any terminal or collector reads it).

    The fields given with ``extra=`` (strings, numbers, booleans) are kept as fields of their own.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        for key, value in record.__dict__.items():
            if (
                key not in _STANDARD_ATTRIBUTES
                and not key.startswith("_")
                and (value is None or isinstance(value, str | int | float | bool))
            ):
                entry.setdefault(key, value)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = _type_name(record.exc_info[0])
            entry["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(level: str | None = None, log_format: str | None = None) -> None:
    """Attach the stderr handler once; set the level and the format every time.

    Without arguments, ``AUTHSVC_LOG_LEVEL`` and ``AUTHSVC_LOG_FORMAT`` are read from the
    environment (the command line configures logging before it reads the settings).
    """
    global _handler
    logger = logging.getLogger("authsvc")
    if _handler is None:
        _handler = StderrHandler()
        _handler.addFilter(RequestIdFilter())
        logger.addHandler(_handler)
        logger.propagate = False
    # an invalid value is reported by the settings (one line naming the variable), not here
    wanted_format = (log_format or os.environ.get("AUTHSVC_LOG_FORMAT") or "text").strip().lower()
    _handler.setFormatter(formatter(wanted_format if wanted_format in LOG_FORMATS else "text"))
    wanted = (level or os.environ.get("AUTHSVC_LOG_LEVEL") or "INFO").strip().upper()
    logger.setLevel(wanted if wanted in logging.getLevelNamesMapping() else "INFO")
