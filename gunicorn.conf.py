"""gunicorn's configuration for authsvc in production (docs/deployment.md):

    gunicorn -c gunicorn.conf.py 'authsvc.wsgi:app'

Sizing (measured on the project's 2-core machine; bench numbers in docs/deployment.md):

- ``worker_class = "gthread"``: each worker process serves several requests at once in threads.
  A password sign-in spends most of its time in Argon2id (19 MiB, t=2: 20-100 ms a verification),
  and argon2-cffi releases the GIL while it hashes: another thread of the same process keeps
  running meanwhile, and two threads verify ~1.9 times as many passwords a second as one on two
  quiet cores (bench/signin.py). The rest of a request (JWT signing, SQLAlchemy, templates) holds
  the GIL, so processes, not threads, are what use the cores, and threads are what cover the
  waits: PostgreSQL, Redis, a CRL or OCSP fetch (up to 5 s), a back-channel logout.
- ``workers`` = the number of cores (``AUTHSVC_WORKERS``), ``threads`` = 4 (``AUTHSVC_THREADS``).
  More threads do not add CPU; they add Argon2 memory (19 MiB each at once) and connections.
- Connections: each worker keeps ``threads + 1`` connections to PostgreSQL (its threads and its
  outbox thread) and may open ``threads`` more at a peak; this file sets ``AUTHSVC_DB_POOL_SIZE``
  and ``AUTHSVC_DB_MAX_OVERFLOW`` accordingly unless they are set. Keep
  ``instances x workers x (2 x threads + 1)`` below PostgreSQL's ``max_connections``.

The command line wins over this file (``--workers 2 --threads 8 --bind 0.0.0.0:8000``), and so does
``GUNICORN_CMD_ARGS``.

Processes: no ``preload_app``: each worker builds its own application after the fork (its own
database pool, PKCS#11 sessions, caches), which is what the pool, the key store and the HSM need.
If preload is turned on anyway, ``post_fork`` throws away the connections the master opened.
``post_worker_init`` starts the worker's outbox thread at once (without it, a worker that never
got a request would never deliver mail). ``worker_exit`` stops that thread and closes the pool.
"""

from __future__ import annotations

import os
from typing import Any


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _whole(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise SystemExit(f"error: {name}: expected a whole number, got {raw!r}") from None
    if value <= 0:
        raise SystemExit(f"error: {name}: must be greater than 0, got {value}")
    return value


bind = [b.strip() for b in os.environ.get("AUTHSVC_BIND", "127.0.0.1:8000").split(",") if b.strip()]
worker_class = "gthread"
workers = _whole("AUTHSVC_WORKERS", _cores())
threads = _whole("AUTHSVC_THREADS", 4)
proc_name = "authsvc"

# A gthread worker whose main loop stalls this long is restarted; requests themselves are bounded
# by the application (database: 5 s to connect, 10 s for a pool slot; CRL/OCSP: 5 s).
timeout = 30
# SIGTERM (a rolling restart): requests in flight get this long to finish.
graceful_timeout = 30
# Longer than the reverse proxy's upstream keep-alive (nginx: 60 s), so that the proxy never
# reuses a connection gunicorn has just closed. Idle connections cost no thread in gthread.
keepalive = 75
# Recycle workers now and then (memory), not all at once.
max_requests = 20000
max_requests_jitter = 2000
# The heartbeat file in memory, not on a disk that may stall (containers).
if os.path.isdir("/dev/shm"):  # noqa: S108 - gunicorn's heartbeat files, its own per worker
    worker_tmp_dir = "/dev/shm"  # noqa: S108
errorlog = "-"
# gunicorn >= 25.1 opens a control socket at one fixed path per user: several instances on a host
# would take it from each other. Signals (HUP, TERM, TTIN/TTOU) do the same job.
control_socket_disable = True
# X-Forwarded-Proto is believed only from these (gunicorn's own default); the client address the
# limits use is set by the application's AUTHSVC_TRUSTED_PROXIES (docs/deployment.md).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


def _services(app: Any) -> Any:
    extensions = getattr(app, "extensions", None)
    return extensions.get("authsvc") if isinstance(extensions, dict) else None


def on_starting(server: Any) -> None:
    # The effective thread count (the command line may have changed it): the pool follows it.
    count = int(server.cfg.threads)
    os.environ.setdefault("AUTHSVC_DB_POOL_SIZE", str(count + 1))
    os.environ.setdefault("AUTHSVC_DB_MAX_OVERFLOW", str(count))


def post_fork(server: Any, worker: Any) -> None:
    # Only with preload_app: connections opened by the master must not be shared with children.
    services = _services(getattr(server.app, "callable", None))
    if services is not None:
        services.db.engine.dispose(close=False)


def post_worker_init(worker: Any) -> None:
    app: Any = getattr(worker, "wsgi", None)
    services = _services(app)
    if services is not None and app.config.get("AUTHSVC_OUTBOX_WORKER", True):
        services.outbox_worker.start()


def worker_exit(server: Any, worker: Any) -> None:
    services = _services(getattr(worker, "wsgi", None))
    if services is not None:
        services.close()  # stops the outbox thread (its claims expire if it was cut short)


def child_exit(server: Any, worker: Any) -> None:
    # prometheus_client's multiprocess mode (docs/operations.md): forget the dead worker's gauges
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        try:
            from prometheus_client import multiprocess
        except ImportError:
            return
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
