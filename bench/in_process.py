"""Benchmark: the CPU each request costs authsvc in this process, without a server or a network.

Not a test. ``bench/oidc_vs_peer.py`` measures requests/s through a real server; this one tells
where a request's CPU goes, steadier than a rate on a shared machine: it calls authsvc's WSGI
application directly (the one ``authsvc.wsgi`` serves: the fast path of discovery and JWKS, then
Flask) with prepared requests, and divides the CPU time of the process (``time.process_time``,
all threads) by the requests answered, the best of ``--chunks`` chunks. Every answer's status is
checked; one that is not the expected one fails the run.

What it measures (SQLite by default, a fresh database prepared as ``bench/oidc_vs_peer.py``
prepares it: a confidential client, an active account with a live session, its codes):

- the web layer's floor: an empty view (``return ""``) registered on authsvc's application, with
  every hook authsvc runs on a request (request id, metrics, limits, headers), against the same
  view on a bare ``flask.Flask``;
- discovery (answered before Flask, ``authsvc/web/fast.py``);
- the token endpoint: ``client_credentials`` (RFC 9068 ES256 access token, persisted and
  audited), and a code exchange (code + PKCE → ID, access and refresh tokens);
- introspection and userinfo of a user's access token (from a real code exchange);
- the database's units of work (SQLAlchemy): ``SELECT 1`` in an ORM session's transaction, in a
  Core connection's transaction, and as a statement on an open connection.

Each request kind is measured from one thread and from ``--threads`` threads at once (as a
worker's blocking threads share one GIL). ``--profile KIND`` prints the functions that KIND's
requests spent the most time in, one thread (cProfile, whose own cost inflates the figures).

    .venv/bin/python bench/in_process.py [--requests 1000] [--chunks 4] [--threads 4]
        [--db sqlite|postgresql] [--only token,userinfo] [--profile token] [--results bench/results]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa

from bench.oidc_vs_peer import REDIRECT_URI, Instance, basic, database, machine
from bench.report import emit

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


class Requests:
    """Prepared WSGI environs of one kind of request: each call gives a fresh one."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: str = "") -> None:
        from werkzeug.test import EnvironBuilder

        content_type = "application/x-www-form-urlencoded" if method == "POST" else None
        built = EnvironBuilder(
            path=path,
            method=method,
            headers=headers,
            data=body.encode() if method == "POST" else None,
            content_type=content_type,
            base_url="http://127.0.0.1:5000",
        ).get_environ()
        built.pop("wsgi.input", None)
        self.template = built
        self.body = body.encode()

    def environ(self, body: bytes | None = None) -> dict[str, Any]:
        data = self.body if body is None else body
        environ = dict(self.template)
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        return environ


class Kind:
    """One kind of request: how to make the next one, and the status its answer must have."""

    def __init__(
        self,
        name: str,
        app: WSGIApp | None,
        make: Callable[[], Any],
        expect: str = "200",
        call: Callable[[Any], str] | None = None,
    ) -> None:
        self.name = name
        self.make = make
        self.expect = expect
        self._app = app
        self._call = call

    def once(self) -> str:
        """One request (or unit of work): its status."""
        made = self.make()
        if self._call is not None:
            return self._call(made)
        assert self._app is not None
        status: list[str] = []

        def start_response(line: str, _headers: Any, _exc: Any = None) -> None:
            status.append(line)

        body = self._app(made, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return status[0].split(" ", 1)[0]


def run(kind: Kind, n: int, threads: int) -> tuple[float, float]:
    """``n`` of ``kind`` from ``threads`` threads: (CPU seconds of this process, wall seconds)."""
    failures: list[str] = []

    def work(count: int) -> None:
        for _ in range(count):
            status = kind.once()
            if status != kind.expect:
                failures.append(status)
                return

    shares = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    cpu, wall = time.process_time(), time.perf_counter()
    if threads == 1:
        work(n)
    else:
        pool = [threading.Thread(target=work, args=(share,)) for share in shares]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if failures:
        raise RuntimeError(f"{kind.name}: answered {failures[0]}, expected {kind.expect}")
    return cpu, wall


def best(kind: Kind, n: int, chunks: int, threads: int) -> dict[str, float]:
    """CPU and wall time per request (µs), the best chunk of ``chunks`` (after a warm-up)."""
    run(kind, max(50, n // 10), threads)
    per = [run(kind, n, threads) for _ in range(chunks)]
    cpu = min(c for c, _ in per) / n * 1e6
    wall = min(w for _, w in per) / n * 1e6
    return {"cpu_us": round(cpu, 1), "wall_us": round(wall, 1)}


def profile(kind: Kind, n: int, top: int = 30) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run(kind, n, 1)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"\n--- profile: {kind.name}, {n} requests, one thread (cProfile) ---")
    print(out.getvalue())


@contextlib.contextmanager
def prepared(db: str) -> Iterator[tuple[Instance, Any, WSGIApp]]:
    """A fresh authsvc database and instance: (instance, workload, authsvc's WSGI application)."""
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-inproc-") as folder:
        tmp = Path(folder)
        with database(db, tmp) as url:
            instance = Instance(tmp, url, 5000)
            try:
                workload = instance.prepare()
                from authsvc import create_app
                from authsvc.config import load_settings

                settings = load_settings(
                    {k: v for k, v in instance.env.items() if k.startswith("AUTHSVC_")}
                )
                app = create_app(settings, SERVICES=instance.services, AUTHSVC_OUTBOX_WORKER=False)
                app.add_url_rule("/bench/empty", "bench_empty", lambda: "")
                yield instance, workload, app
            finally:
                instance.close()


def kinds(instance: Instance, workload: Any, app: WSGIApp, n_codes: int) -> list[Kind]:
    import flask

    bare = flask.Flask("bare")
    bare.add_url_rule("/bench/empty", "bench_empty", lambda: "")
    auth = basic(workload.client_id, workload.client_secret)
    empty = Requests("GET", "/bench/empty", {})
    discovery = Requests("GET", "/.well-known/openid-configuration", {})
    client_credentials = Requests(
        "POST", "/token", {"Authorization": auth}, "grant_type=client_credentials"
    )
    exchange = Requests("POST", "/token", {"Authorization": auth}, "grant_type=authorization_code")
    tail = "&" + urllib.parse.urlencode(
        {"redirect_uri": REDIRECT_URI, "code_verifier": workload.verifier}
    )
    codes = iter(instance.insert_codes(workload, n_codes, lifetime=3600))
    lock = threading.Lock()

    def next_exchange() -> dict[str, Any]:
        with lock:
            code = next(codes)
        body = f"grant_type=authorization_code&code={code}{tail}".encode()
        return exchange.environ(body)

    def user_access_token() -> str:
        import json

        environ = next_exchange()
        out: list[bytes] = []
        status: list[str] = []
        out.extend(app(environ, lambda line, _h, _e=None: status.append(line)))
        if not status[0].startswith("200"):
            raise RuntimeError(f"code exchange: {status[0]} {b''.join(out)[:200]!r}")
        return str(json.loads(b"".join(out))["access_token"])

    token = user_access_token()
    introspection = Requests(
        "POST",
        "/introspect",
        {"Authorization": auth},
        urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}),
    )
    userinfo = Requests("GET", "/userinfo", {"Authorization": f"Bearer {token}"})

    engine = instance.services.db.engine
    sessions = instance.services.db.session
    select_one = sa.text("SELECT 1")
    connection = engine.connect()

    def orm_unit(_: None) -> str:
        with sessions() as session, session.begin():
            session.execute(select_one).scalar()
        return "200"

    def core_unit(_: None) -> str:
        with engine.begin() as conn:
            conn.execute(select_one).scalar()
        return "200"

    def statement(_: None) -> str:
        connection.execute(select_one).scalar()
        return "200"

    def none() -> None:
        return None

    return [
        Kind("empty view, bare Flask", bare, empty.environ),
        Kind("empty view, authsvc's web layer", app, empty.environ),
        Kind("discovery (before Flask)", app, discovery.environ),
        Kind("token, client_credentials", app, client_credentials.environ),
        Kind("token, code exchange", app, next_exchange),
        Kind("introspection", app, introspection.environ),
        Kind("userinfo", app, userinfo.environ),
        Kind("unit of work: ORM session, SELECT 1", None, none, call=orm_unit),
        Kind("unit of work: Core connection, SELECT 1", None, none, call=core_unit),
        Kind("statement: SELECT 1 on an open connection", None, none, call=statement),
    ]


SHORT = {
    "empty": ("empty view",),
    "discovery": ("discovery",),
    "token": ("token, client_credentials",),
    "code": ("token, code exchange",),
    "introspection": ("introspection",),
    "userinfo": ("userinfo",),
    "db": ("unit of work", "statement"),
}


def wanted(option: str, names: str) -> tuple[str, ...]:
    """The name prefixes of the kinds ``names`` (comma-separated) selects; exits on a wrong one."""
    words = [w.strip() for w in names.split(",") if w.strip()]
    unknown = [w for w in words if w not in SHORT]
    if unknown:
        raise SystemExit(
            f"error: {option}: unknown {', '.join(unknown)} (one of {', '.join(SHORT)})"
        )
    return tuple(p for w in words for p in SHORT[w])


def selected(all_kinds: list[Kind], prefixes: tuple[str, ...]) -> list[Kind]:
    return [k for k in all_kinds if not prefixes or k.name.startswith(prefixes)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per chunk")
    parser.add_argument("--chunks", type=int, default=4, help="chunks per kind (the best)")
    parser.add_argument("--threads", type=int, default=4, help="threads at once, as a worker's")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(SHORT)}")
    parser.add_argument("--profile", default="", help="profile this kind (a name of --only)")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    if args.requests < 10 or args.chunks < 1 or args.threads < 1:
        raise SystemExit("error: --requests ≥ 10, --chunks ≥ 1 and --threads ≥ 1")
    only = wanted("--only", args.only)
    profiled = wanted("--profile", args.profile)
    if args.profile and "," in args.profile:
        raise SystemExit("error: --profile: one kind only")
    per_kind = args.requests * args.chunks + max(50, args.requests // 10)
    n_codes = 2 * per_kind + args.requests + 10  # one thread, then threads, and the profile
    load = os.getloadavg()
    results: dict[str, dict[str, float]] = {}
    try:
        with prepared(args.db) as (instance, workload, app):
            every = kinds(instance, workload, app, n_codes)
            chosen = selected(every, only)
            print(
                f"CPU per request in process, {args.db}, best of {args.chunks} × "
                f"{args.requests}, µs (1 thread | {args.threads} threads at once)"
            )
            for kind in chosen:
                one = best(kind, args.requests, args.chunks, 1)
                many = best(kind, args.requests, args.chunks, args.threads)
                results[kind.name] = {
                    "cpu_us": one["cpu_us"],
                    "wall_us": one["wall_us"],
                    f"cpu_us_{args.threads}_threads": many["cpu_us"],
                }
                print(f"  {kind.name:<44} {one['cpu_us']:>8.1f}   | {many['cpu_us']:>8.1f}")
            if profiled:
                for target in selected(every, profiled):
                    profile(target, args.requests)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    after = os.getloadavg()
    print(f"load {load[0]:.2f} {load[1]:.2f} → {after[0]:.2f} {after[1]:.2f}; {machine()}")
    emit(
        {
            "bench": "in_process",
            "db": args.db,
            "requests": args.requests,
            "chunks": args.chunks,
            "threads": args.threads,
            "machine": machine(),
            "load_before": load,
            "load_after": after,
            "results": results,
        },
        "in-process",
        args.results,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
