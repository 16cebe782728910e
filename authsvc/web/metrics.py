"""Prometheus metrics of the web layer, and ``/metrics`` for the operator (docs/operations.md).

Every request is counted by endpoint — the Flask rule (``/api/login/<flow_id>/password``), never
the path, so that no id or code reaches a label — method and status class, and timed. A ``429``
answered to a sign-in (per-IP or per-matricule limit) is counted as a ``limited`` sign-in.

``/metrics`` exists only with ``AUTHSVC_METRICS=on``, and answers only requests that did not come
through a proxy: one that carries ``X-Forwarded-For``, ``Forwarded`` or ``X-Real-IP`` gets the same
``404`` as a path that does not exist. Prometheus scrapes each instance at its own address; the
public load balancer adds ``X-Forwarded-For`` to everything it forwards.

At each scrape, one cheap query (bounded by a 2 s statement timeout on PostgreSQL, on a connection
of its own so that a full pool cannot hold it) gives the outbox's depth and age; if the database
does not answer, the scrape still succeeds, with ``authsvc_database_up 0``.

Several gunicorn workers: when ``PROMETHEUS_MULTIPROC_DIR`` is set, the scrape adds up the files of
every worker (prometheus_client's multiprocess mode); otherwise it reads this process's registry.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, Response, abort, request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, case, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from .. import __version__
from .. import metrics as recorded
from ..app import Services
from ..errors import ConfigError
from ..outbox.models import OutboxMessage
from .fast import STARTED

log = logging.getLogger("authsvc.metrics")

UNMATCHED = "<unmatched>"
#: headers a proxy adds: a request that has one came through the proxy, not from the scraper
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
#: endpoints whose 429 is a sign-in refused by a limit
SIGN_IN_ENDPOINTS = {"login_api.password": "password", "login_api.smartcard": "smartcard"}
OUTBOX_KINDS = ("mail", "backchannel_logout")
#: the scrape's query on PostgreSQL: connection and statement bounded well under a scrape timeout
CONNECT_TIMEOUT = 3
STATEMENT_TIMEOUT_MS = 2000
#: messages given up within this window are reported (older ones are purged in time anyway)
ABANDONED_WINDOW = timedelta(days=1)


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multiprocess mode, when that mode is on."""
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def check_multiprocess_dir() -> None:
    folder = multiprocess_dir()
    if folder is None:
        return
    if not folder or not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR: {folder!r} is not a folder this process can write "
            "(create it, empty, before gunicorn starts; docs/operations.md)"
        )


class _Forward(Collector):
    """Collects from another registry (this process's default one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


class DatabaseGauges(Collector):
    """Computed at scrape time: the database answers; the outbox's depth and age per kind."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._engine: Engine | None = None

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "authsvc_build_info", "The version of authsvc this instance runs.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        up = GaugeMetricFamily(
            "authsvc_database_up",
            "1 when the database answered the scrape's query within its timeout, 0 otherwise.",
        )
        try:
            rows = self.outbox_rows()
        except Exception as exc:  # whatever happens, the scrape itself succeeds
            log.warning("metrics: the database does not answer: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self.outbox_gauges(rows)

    def outbox_query(self) -> Any:
        """One pass over the rows not delivered (an index on ``delivered_at``)."""
        pending = OutboxMessage.abandoned_at.is_(None)
        since = self.services.clock.now() - ABANDONED_WINDOW
        return (
            select(
                OutboxMessage.kind,
                pending.label("pending"),
                func.count().label("count"),
                func.min(OutboxMessage.created_at).label("oldest"),
                func.sum(case((OutboxMessage.attempts > 0, 1), else_=0)).label("retrying"),
                func.sum(case((OutboxMessage.abandoned_at >= since, 1), else_=0)).label("recent"),
            )
            .where(OutboxMessage.delivered_at.is_(None))
            .group_by(OutboxMessage.kind, pending)
        )

    def outbox_rows(self) -> Sequence[Any]:
        db = self.services.db
        if db.dialect != "postgresql":
            # SQLite (one host): a read transaction in WAL mode waits for no writer
            with db.read_transaction() as session:
                return session.execute(self.outbox_query()).all()
        with self.engine().begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            return conn.execute(self.outbox_query()).all()

    def engine(self) -> Engine:
        """A connection per scrape (no pool): a pool exhausted by requests cannot hold the scrape,
        and a database that is down fails the connection within ``CONNECT_TIMEOUT``."""
        if self._engine is None:
            url = make_url(self.services.db.url)
            connect_args: dict[str, Any] = {}
            if "connect_timeout" not in url.query:
                connect_args["connect_timeout"] = CONNECT_TIMEOUT
            self._engine = create_engine(
                url, poolclass=NullPool, connect_args=connect_args, hide_parameters=True
            )
        return self._engine

    def outbox_gauges(self, rows: Sequence[Any]) -> Iterable[Metric]:
        now = self.services.clock.now()
        kinds = {kind: _Outbox() for kind in OUTBOX_KINDS}
        for row in rows:
            kind = kinds.setdefault(row.kind if row.kind in OUTBOX_KINDS else "other", _Outbox())
            if row.pending:
                kind.pending += int(row.count)
                kind.retrying += int(row.retrying or 0)
                if row.oldest is not None:
                    kind.oldest_age = max(kind.oldest_age, (now - row.oldest).total_seconds())
            else:
                kind.abandoned += int(row.recent or 0)
        pending = GaugeMetricFamily(
            "authsvc_outbox_pending_messages",
            "Outbox messages waiting for delivery, by kind (mail, backchannel_logout).",
            labels=["kind"],
        )
        retrying = GaugeMetricFamily(
            "authsvc_outbox_retrying_messages",
            "Outbox messages waiting for delivery after at least one failed attempt.",
            labels=["kind"],
        )
        oldest = GaugeMetricFamily(
            "authsvc_outbox_oldest_pending_age_seconds",
            "Age of the oldest message waiting for delivery (0 when none waits).",
            labels=["kind"],
        )
        abandoned = GaugeMetricFamily(
            "authsvc_outbox_abandoned_recent_messages",
            "Outbox messages given up (retry period over, or expired) in the last 24 hours.",
            labels=["kind"],
        )
        for name, kind in sorted(kinds.items()):
            pending.add_metric([name], kind.pending)
            retrying.add_metric([name], kind.retrying)
            oldest.add_metric([name], kind.oldest_age)
            abandoned.add_metric([name], kind.abandoned)
        return [pending, retrying, oldest, abandoned]


@dataclass
class _Outbox:
    pending: int = 0
    retrying: int = 0
    abandoned: int = 0
    oldest_age: float = 0.0


def scrape_registry(services: Services) -> CollectorRegistry:
    """What ``/metrics`` shows: every worker's metrics (or this process's), and the database's."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir() is not None:
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(DatabaseGauges(services))
    return registry


def through_a_proxy() -> bool:
    return any(name in request.headers for name in PROXY_HEADERS)


def init_metrics(app: Flask) -> None:
    """Count and time every request; serve ``/metrics`` when ``AUTHSVC_METRICS=on``."""
    services: Services = app.extensions["authsvc"]
    check_multiprocess_dir()

    @app.after_request
    def _count_request(response: Response) -> Response:
        # timed from the outermost middleware (authsvc/web/fast.py), which sees it first
        # (not when the application below the middleware is called directly: counted, untimed)
        started = request.environ.get(STARTED)
        seconds = time.perf_counter() - started if started is not None else None
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else UNMATCHED
        recorded.http_request(endpoint, request.method, response.status_code, seconds)
        if response.status_code == 429 and request.endpoint in SIGN_IN_ENDPOINTS:
            recorded.sign_in(SIGN_IN_ENDPOINTS[request.endpoint], "limited")
        return response

    if not services.settings.metrics:
        return
    registry = scrape_registry(services)

    @app.get("/metrics")
    def metrics() -> Response:
        if through_a_proxy():
            abort(404)
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
