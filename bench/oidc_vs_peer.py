"""Benchmark: authsvc's OIDC endpoints, requests per second, against the peer.

Not a test. In one run, on this machine, with the same load generator (Debian's ``wrk``, keep-alive
connections), it measures the peer of PERFORMANCE.md — panva's node ``oidc-provider`` configured by
``../shared/peer-oidc-provider/`` (in-memory store) — and authsvc under granian or gunicorn
(``--server``; every code and token persisted), and prints the ratios of PERFORMANCE.md's targets:

- token endpoint, ``client_credentials``, RFC 9068 ES256 JWT access token:
  authsvc ÷ peer ≥ 1.0 (the peer is asked for ``resource=urn:bench:jwt``, its JWT access tokens);
- authorization-code exchange (code + PKCE → ID token + access token + refresh token):
  authsvc ÷ the peer's ``client_credentials`` ≥ 0.7;
- introspection of an access token: authsvc ÷ peer ≥ 1.0;
- userinfo (GET, ``Authorization: Bearer``) with a user's access token: authsvc ÷ peer ≥ 1.0;
- discovery (``/.well-known/openid-configuration``) and JWKS (authsvc ``/jwks.json``, the peer's
  ``jwks_uri`` from its discovery), plain GETs: authsvc ÷ peer ≥ 1.0 (their ``Cache-Control`` and
  ``ETag`` headers are printed).

It also reports the resident memory (``VmRSS``) of each server worker at the start, after each
round and at the end of the runs (PERFORMANCE.md: ≤ 120 MB per worker after 100,000 requests, and
flat), and the number of requests authsvc served. The servers (``--server``):

- ``granian`` (the default: it measured best, docs/deployment.md) runs as docs/deployment.md
  recommends — ``--interface wsgi --factory 'authsvc.wsgi:worker_app' --http 1 --no-ws``,
  ``--workers`` processes (default: the number of cores) of ``--threads`` blocking threads each
  (default 4), the database pool sized as gunicorn.conf.py sizes it (threads + 1, overflow
  threads), no ``--workers-lifetime`` (no worker is recycled during the runs);
- ``gunicorn`` runs with the production settings of ``gunicorn.conf.py`` (hooks, pool sizing),
  overridden on the command line: bind, workers (default: 2 × cores), threads (gthread, or sync
  with ``--threads 1``), keep-alive, and ``--max-requests 0`` so that no worker is recycled during
  the runs (in production workers are recycled every ~20,000 requests, which would hide a leak
  from this measurement).

What it does, and stops again (on success, error or Ctrl-C): copies the peer into a temporary
folder and runs ``npm ci`` (``npm install`` without a lock file) there, starts ``node server.mjs``;
makes a fresh authsvc instance (folder, secret, database: SQLite in the instance, or with
``--db postgresql`` a fresh PostgreSQL database, dropped afterwards), runs ``authsvc db upgrade``,
registers a confidential client (``client_credentials`` and the code grant), an active account with
a live provider session, and starts the server.

The user's access tokens introspected and sent to userinfo come from real code exchanges; authsvc's
live 5 minutes, so a fresh one is made before each of those runs (the peer's lives an hour).

The authorization codes are NOT made through the authorization endpoint (tens of thousands of
sign-ins would take longer than the benchmark): they are inserted into ``authorization_codes`` with
the fields ``save_authorization_code`` writes — the code's keyed hash (``KeyedHasher``,
``Purpose.AUTHORIZATION_CODE``), the account's live session, its ``acr``/``amr``/``auth_time``, the
S256 challenge of a known verifier — except ``expires_at``, set far enough ahead for the run
instead of 60 s. Each wrk thread takes the next code of its own share: none is sent twice.

Every wrk run must answer only 2xx (the non-2xx count is printed, and a run with errors is
reported as invalid); the responses' content is checked once before the runs (tokens present,
``"active": true``, userinfo's ``sub``, discovery's issuer, JWKS's keys) and the introspected
tokens are checked again after them.

    .venv/bin/python bench/oidc_vs_peer.py [--db sqlite|postgresql|both]
        [--duration 12] [--repeat 3] [--warmup 2]
        [--server granian|gunicorn] [--workers N] [--threads N]
        [--results bench/results]   # also write the JSON line to a file there
        [--profile]   # then one more run per authsvc endpoint under py-spy (wall, then GIL)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa

from bench.report import emit, source_revision

PEER_DIR = ROOT.parent / "shared" / "peer-oidc-provider"
PG_ADMIN_URL = os.environ.get(
    "AUTHSVC_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BIN = Path(sys.executable).parent
PEER_CLIENT = ("bench-client", "bench-secret")
REDIRECT_URI = "http://127.0.0.1/cb"
CODE_SCOPE = "openid profile email professional"

TARGETS = {  # PERFORMANCE.md: ratio name → (authsvc figure, peer figure, target)
    "token": ("authsvc client_credentials", "peer client_credentials", 1.0),
    "code exchange": ("authsvc code exchange", "peer client_credentials", 0.7),
    "introspection": ("authsvc introspection", "peer introspection", 1.0),
    "userinfo": ("authsvc userinfo", "peer userinfo", 1.0),
    "discovery": ("authsvc discovery", "peer discovery", 1.0),
    "JWKS": ("authsvc JWKS", "peer JWKS", 1.0),
}
#: the WSGI servers --server knows: default threads per worker, and the frame of their stacks that
#: calls the application (py-spy's profiles count the stacks under it)
SERVERS: dict[str, dict[str, Any]] = {
    "granian": {"threads": 4, "marker": "granian/wsgi.py"},
    "gunicorn": {"threads": 4, "marker": "ThreadWorker.handle "},
}
MEMORY_LIMIT_MB = 120  # PERFORMANCE.md: resident memory per worker after 100,000 requests


def say(*args: Any) -> None:
    print(*args, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def post_form(url: str, auth: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def get(url: str, auth: str | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A GET: status, headers (lower-case names), JSON body."""
    request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        headers = {k.lower(): v for k, v in exc.headers.items()}
        return exc.code, headers, json.loads(exc.read() or b"{}")


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s")


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Processes:
    """What this run started, stopped in reverse order whatever happens."""

    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        # a process group of its own: stopped as a whole (the server's workers, npm's children)
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # anything left in its group (a worker that outlived its master)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        while self.started:
            _, proc = self.started.pop()
            self.stop(proc)


def drain(stream: IO[bytes], sink: IO[bytes]) -> None:
    """Copy a child's output to a log file (a full pipe would stall the child)."""
    for line in iter(stream.readline, b""):
        sink.write(line)
        sink.flush()


def cpu_seconds(pgid: int, database: str | None = None) -> tuple[float, float]:
    """CPU seconds (user + system, and system alone) used so far by the live processes of a
    process group, and by the PostgreSQL backends serving ``database`` (their title names it).

    Steadier than rates on a busy machine: a server given less CPU answers fewer requests, but
    each request still costs it about the same CPU time."""
    total = system = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            mine = int(fields[2]) == pgid  # pgrp
            if not mine and database and stat[stat.index("(") + 1 : stat.rindex(")")] == "postgres":
                mine = f" {database} ".encode() in Path(entry.path, "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if mine:
            total += int(fields[11]) + int(fields[12])  # utime, stime (stat's fields 14, 15)
            system += int(fields[12])
    return total / os.sysconf("SC_CLK_TCK"), system / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (VmRSS), in MB (10^6 bytes); None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def workers_of(master: int) -> list[int]:
    """The live child processes of ``master`` (gunicorn's or granian's workers), by pid.

    Both servers' masters have no other children: gunicorn forks its workers, granian starts them
    with multiprocessing (fork on Linux) and uses no resource tracker."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == master:  # ppid
            pids.append(int(entry.name))
    return sorted(pids)


def workers_rss(master: int) -> dict[int, float]:
    return {pid: mb for pid in workers_of(master) if (mb := rss_mb(pid)) is not None}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- the peer ------------------------------------------------------------------------------------


@dataclass
class Peer:
    base: str
    userinfo_token: str
    pid: int
    version: str


def start_peer(procs: Processes, source: Path, tmp: Path) -> Peer:
    folder = tmp / "peer"
    folder.mkdir()
    for name in ("package.json", "package-lock.json", "server.mjs"):
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    npm = ["npm", "ci"] if (folder / "package-lock.json").is_file() else ["npm", "install"]
    say(f"peer: {' '.join(npm)} in {folder}")
    subprocess.run(
        [*npm, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    version = json.loads((folder / "node_modules/oidc-provider/package.json").read_text())[
        "version"
    ]
    port = free_port()
    log = (tmp / "peer.log").open("wb")
    proc = procs.start(
        "peer",
        ["node", "server.mjs", str(port)],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    ready: dict[str, Any] | None = None
    while ready is None:
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            raise RuntimeError(f"the peer did not start (see {tmp / 'peer.log'})")
        log.write(line)
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if isinstance(data, dict) and data.get("ready"):
                ready = data
    threading.Thread(target=drain, args=(proc.stdout, log), daemon=True).start()
    say(f"peer: oidc-provider {version}, node {node_version()}, {ready['issuer']}")
    return Peer(ready["issuer"], ready["userinfo_token"], proc.pid, version)


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


# --- authsvc -------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh, empty database: its URL; a PostgreSQL one is dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'instance' / 'authsvc.sqlite3'}"
        return
    name = f"authsvc_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        say(f"database {name} dropped")


@dataclass
class Workload:
    """What the runs send to authsvc."""

    client_id: str
    client_secret: str
    account_id: Any
    session_id: str
    acr: str
    amr: list[str]
    auth_time: Any
    verifier: str
    challenge: str


def granian_argv(app: list[str], port: int, workers: int, threads: int) -> list[str]:
    """granian serving the WSGI application ``app`` (its arguments) on 127.0.0.1:``port``."""
    return [
        str(BIN / "granian"),
        "--interface",
        "wsgi",
        *app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--http",
        "1",
        "--no-ws",
        "--backlog",
        "512",
    ]


def server_argv(server: str, port: int, workers: int, threads: int) -> list[str]:
    """The command line of authsvc's production server on 127.0.0.1:``port`` (docs/deployment.md),
    with what a benchmark needs on top: a larger backlog, and no worker recycled during the runs."""
    if server == "granian":
        return granian_argv(["--factory", "authsvc.wsgi:worker_app"], port, workers, threads)
    return [
        str(BIN / "gunicorn"),
        "--config",
        str(ROOT / "gunicorn.conf.py"),
        "authsvc.wsgi:app",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread" if threads > 1 else "sync",
        "--threads",
        str(threads),
        "--keep-alive",
        "30",
        "--backlog",
        "512",
        "--max-requests",
        "0",
    ]


class Instance:
    """A fresh authsvc instance: its settings, and its services in this process (to prepare)."""

    def __init__(self, tmp: Path, url: str, port: int) -> None:
        self.env = {
            **os.environ,
            "AUTHSVC_INSTANCE_DIR": str(tmp / "instance"),
            "AUTHSVC_SECRET_KEY": secrets.token_urlsafe(48),
            "AUTHSVC_DATABASE_URL": url,
            "AUTHSVC_ISSUER": f"http://127.0.0.1:{port}",
            "PYTHONPATH": str(ROOT),  # this tree's authsvc, whatever the virtualenv points at
        }
        self.env.pop("AUTHSVC_ENV_FILE", None)
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        upgrade = subprocess.run(
            [str(BIN / "authsvc"), "db", "upgrade"], env=self.env, capture_output=True, text=True
        )
        if upgrade.returncode != 0:
            raise RuntimeError(f"authsvc db upgrade failed: {upgrade.stderr.strip()}")
        say(f"authsvc: {upgrade.stderr.strip()}")
        import authsvc.models  # noqa: F401 - every table known to the metadata
        from authsvc.app import Services
        from authsvc.config import load_settings

        self.services = Services.from_settings(
            load_settings({k: v for k, v in self.env.items() if k.startswith("AUTHSVC_")})
        )

    def prepare(self) -> Workload:
        """A confidential client, an active account with a live session, the signing keys."""
        from authsvc import matricule
        from authsvc.accounts.models import Account, AccountStatus
        from authsvc.activation import letters
        from authsvc.directory.importer import import_directory
        from authsvc.oidc.clients import register
        from authsvc.sessions.service import acr_of

        svc = self.services
        number = matricule.make(date(1970, 5, 17), 1)
        with svc.db.transaction() as db:
            import_directory(
                db,
                (
                    "matricule,given_name,family_name,profession,provider_code\n"
                    f"{number},Anne,Muller,doctor,123456-78\n"
                ).encode(),
                actor="bench",
                clock=svc.clock,
            )
        with svc.db.transaction() as db:
            letters.issue(db, number, hasher=svc.hasher, actor="bench", clock=svc.clock)
            account = db.query(Account).join(Account.professional).filter_by(matricule=number).one()
            now = svc.clock.now()
            account.status = AccountStatus.ACTIVE
            account.email = "anne.muller@example.lu"
            account.email_verified_at = now
            account.activated_at = now
            reg = register(
                db,
                name="bench",
                redirect_uris=[REDIRECT_URI],
                grants=["client_credentials"],
                hasher=svc.hasher,
                actor="bench",
                clock=svc.clock,
            )
            opened = svc.sessions.sign_in(db, account.id, amr=["pwd"])  # as a password sign-in
            svc.sessions.add_client(db, opened.session, reg.client_id)  # as /authorize does
            live = opened.session
            workload = Workload(
                client_id=reg.client_id,
                client_secret=reg.client_secret or "",
                account_id=account.id,
                session_id=live.id,
                acr=acr_of(live, now),
                amr=list(live.amr),
                auth_time=live.auth_time,
                verifier=secrets.token_urlsafe(48),
                challenge="",
            )
        digest = hashlib.sha256(workload.verifier.encode()).digest()
        workload.challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        svc.keys.ready()  # the signing keys, made once here rather than by racing workers
        return workload

    def insert_codes(self, w: Workload, n: int, lifetime: float) -> list[str]:
        """``n`` codes, as ``save_authorization_code`` writes them (but living ``lifetime`` s)."""
        from authsvc.oidc.models import AuthorizationCode
        from authsvc.security.secrets import Purpose

        svc = self.services
        now = svc.clock.now()
        codes = [secrets.token_urlsafe(36) for _ in range(n)]
        rows = [
            {
                "code_hash": svc.hasher.hash(Purpose.AUTHORIZATION_CODE, code),
                "client_id": w.client_id,
                "account_id": w.account_id,
                "session_id": w.session_id,
                "redirect_uri": REDIRECT_URI,
                "scope": CODE_SCOPE,
                "nonce": secrets.token_urlsafe(12),
                "code_challenge": w.challenge,
                "code_challenge_method": "S256",
                "acr": w.acr,
                "amr": w.amr,
                "auth_time": w.auth_time,
                "created_at": now,
                "expires_at": now + timedelta(seconds=lifetime),
            }
            for code in codes
        ]
        with svc.db.transaction() as db:
            for start in range(0, n, 5000):
                db.execute(sa.insert(AuthorizationCode), rows[start : start + 5000])
        return codes

    def count_used_codes(self) -> int:
        from authsvc.oidc.models import AuthorizationCode

        with self.services.db.read_transaction() as db:
            return int(
                db.scalar(
                    sa.select(sa.func.count()).where(
                        AuthorizationCode.used_at.is_not(None),
                        AuthorizationCode.family_id.is_not(None),
                    )
                )
                or 0
            )

    def start(
        self, procs: Processes, server: str, workers: int, threads: int, log: Path
    ) -> subprocess.Popen[bytes]:
        env = self.env
        argv = server_argv(server, self.port, workers, threads)
        if server == "granian":  # as gunicorn.conf.py sizes the pool for its threads
            env = {
                "AUTHSVC_DB_POOL_SIZE": str(threads + 1),
                "AUTHSVC_DB_MAX_OVERFLOW": str(threads),
                **env,
            }
        out = log.open("wb")
        proc = procs.start("authsvc", argv, env=env, cwd=ROOT, stdout=out, stderr=out)
        try:
            wait_http(f"{self.base}/.well-known/openid-configuration", proc, server)
        except RuntimeError as exc:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError("\n".join([str(exc), *tail])) from None
        return proc

    def close(self) -> None:
        self.services.close()


# --- wrk -----------------------------------------------------------------------------------------

LUA_DONE = r"""
local threads = {}
local n = 0
function setup(thread)
  thread:set("id", n)
  n = n + 1
  table.insert(threads, thread)
end
function done(summary, latency, requests)
  local used, exhausted = 0, 0
  for _, t in ipairs(threads) do
    used = used + (t:get("used") or 0)
    exhausted = exhausted + (t:get("exhausted") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_ms":%.2f,"p99_ms":%.2f,"codes_taken":%d,"codes_exhausted":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, used, exhausted))
end
"""


def lua_str(value: str) -> str:
    return json.dumps(value)  # a JSON string of ASCII text is a valid Lua string literal


def form_script(path: str, auth: str, body: str) -> str:
    """The same POST (form body, Basic auth) on every request: wrk's static mode."""
    return (
        f"wrk.method = 'POST'\nwrk.path = {lua_str(path)}\nwrk.body = {lua_str(body)}\n"
        f"wrk.headers['Authorization'] = {lua_str(auth)}\n"
        "wrk.headers['Content-Type'] = 'application/x-www-form-urlencoded'\n" + LUA_DONE
    )


def get_script(path: str, auth: str | None = None) -> str:
    """The same GET on every request (with ``Authorization`` when given): wrk's static mode."""
    script = f"wrk.method = 'GET'\nwrk.path = {lua_str(path)}\n"
    if auth:
        script += f"wrk.headers['Authorization'] = {lua_str(auth)}\n"
    return script + LUA_DONE


def codes_script(path: str, auth: str, folder: Path, body_tail: str) -> str:
    """Each request takes the next unused code of its thread's own file (codes-<id>.txt)."""
    return (
        LUA_DONE
        + f"""
local headers = {{
  ["Authorization"] = {lua_str(auth)},
  ["Content-Type"] = "application/x-www-form-urlencoded",
}}
function init(args)
  codes = {{}}
  for line in io.lines({lua_str(str(folder))} .. "/codes-" .. id .. ".txt") do
    codes[#codes + 1] = line
  end
  used = 0
  exhausted = 0
end
function request()
  used = used + 1
  local code = codes[used]
  if code == nil then
    exhausted = exhausted + 1
    code = "exhausted"
  end
  return wrk.format("POST", {lua_str(path)}, headers,
    "grant_type=authorization_code&code=" .. code .. {lua_str(body_tail)})
end
"""
    )


@dataclass
class Run:
    rate: float
    requests: int
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    #: server CPU (all its processes, user + system) per request, in milliseconds
    cpu_ms: float
    #: cores kept busy during the run by everything else than the server and wrk
    other_cores: float
    codes_taken: int = 0
    codes_exhausted: int = 0
    #: of which system (kernel) CPU, in milliseconds per request
    sys_ms: float = 0.0

    @property
    def valid(self) -> bool:
        return self.non2xx == 0 and self.codes_exhausted == 0 and self.requests > 0


@dataclass(frozen=True)
class Server:
    """The processes that serve one side: a process group (and a PostgreSQL database's backends)."""

    pgid: int
    database: str | None = None

    def cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.pgid, self.database)


class Wrk:
    def __init__(self, folder: Path, connections: int, threads: int) -> None:
        self.folder = folder
        self.connections = connections
        self.threads = threads

    def run(self, name: str, url: str, script: str, duration: float, server: Server) -> Run:
        """One wrk run against ``url``, served by ``server``."""
        path = self.folder / f"{name.replace(' ', '-')}.lua"
        path.write_text(script)
        argv = [
            "wrk",
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(path),
            url,
        ]
        (cpu0, sys0), busy0, wrk0 = server.cpu(), machine_busy(), children_cpu()
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        (cpu1, sys1), busy1, wrk1 = server.cpu(), machine_busy(), children_cpu()
        cpu, system, busy, wrk_cpu = cpu1 - cpu0, sys1 - sys0, busy1 - busy0, wrk1 - wrk0
        line = next((x for x in out.stdout.splitlines() if x.startswith("WRK ")), None)
        if out.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({name}): {out.stderr.strip() or out.stdout.strip()}")
        d = json.loads(line[4:])
        seconds = d["duration_us"] / 1e6
        return Run(
            rate=d["requests"] / seconds,
            cpu_ms=1000 * cpu / max(1, d["requests"]),
            sys_ms=1000 * system / max(1, d["requests"]),
            other_cores=max(0.0, (busy - cpu - wrk_cpu) / seconds),
            requests=d["requests"],
            non2xx=d["status"],
            socket_errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
            p50_ms=d["p50_ms"],
            p99_ms=d["p99_ms"],
            codes_taken=d["codes_taken"],
            codes_exhausted=d["codes_exhausted"],
        )


# --- the benchmark -------------------------------------------------------------------------------


def check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"check failed: {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgresql", "both"],
        default="sqlite",
        help="both: SQLite, then PostgreSQL (each with a fresh peer)",
    )
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per endpoint (the median)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per endpoint")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument(
        "--server",
        choices=list(SERVERS),
        default="granian",
        help="the WSGI server authsvc runs under (default granian: it measured best)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="worker processes (default: granian the number of cores, gunicorn 2 × cores)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads per worker: granian's blocking threads, gunicorn's gthread threads "
        "(1: sync); default 4",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=2500.0,
        help="code exchanges/s to provision codes for (per run: max-rate × duration)",
    )
    parser.add_argument("--peer-dir", type=Path, default=PEER_DIR)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the runs, sample the server's workers with py-spy per authsvc endpoint",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="also write the JSON line to a new file in this folder (e.g. bench/results)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (logs, Lua scripts)"
    )
    args = parser.parse_args()

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    status = 0
    for db in ["sqlite", "postgresql"] if args.db == "both" else [args.db]:
        if args.db == "both":
            say(f"\n=== {db} ===")
        status = max(status, bench(argparse.Namespace(**{**vars(args), "db": db})))
        if status == 130:  # interrupted
            break
    return status


def bench(args: argparse.Namespace) -> int:
    """One benchmark on one database: 0, 1 (an error or an invalid run) or 130 (interrupted)."""
    cores = os.cpu_count() or 1
    workers = args.workers or (cores if args.server == "granian" else 2 * cores)
    if not args.threads:
        args.threads = SERVERS[args.server]["threads"]
    tmp = Path(tempfile.mkdtemp(prefix="authsvc-bench-oidc-"))
    procs = Processes()
    try:
        with database(args.db, tmp) as url:
            try:
                peer = start_peer(procs, args.peer_dir, tmp)
                instance = Instance(tmp, url, free_port())
                try:
                    return measure(args, workers, tmp, peer, instance, procs)
                finally:
                    procs.stop_all()  # before the database is dropped
                    instance.close()
            finally:
                procs.stop_all()
    except KeyboardInterrupt:
        say("\ninterrupted: everything this run started is stopped")
        return 130
    except (RuntimeError, subprocess.CalledProcessError, sa.exc.OperationalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def frame_file(frame: str) -> str:
    """The file of a py-spy frame ``function (path/to/file.py:123)``, shortened: the path inside
    site-packages, or inside this tree."""
    where = frame[frame.rfind("(") + 1 :].rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{ROOT}/"):
        if marker in where:
            return where.split(marker, 1)[1]
    return where


def top_costs(
    paths: list[Path], n: int, marker: str = "ThreadWorker.handle "
) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """From py-spy's raw (folded) stacks of the threads serving a request (those with ``marker``,
    the server's frame that calls the application: gthread's ``ThreadWorker.handle``, granian's
    ``granian/wsgi.py``): the samples, the share of samples whose innermost frame is in each
    package (self time; time in C is the Python caller's), and the ``n`` authsvc functions with
    the largest inclusive share (time in them and in what they call)."""
    total = 0
    by_package: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    lines = [line for path in paths for line in path.read_text().splitlines()]
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if marker not in stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        leaf = frame_file(frames[-1])
        package = leaf.split("/", 1)[0] if "/" in leaf else leaf
        by_package[package] = by_package.get(package, 0) + samples
        seen = set()
        for frame in frames:
            file = frame_file(frame)
            if file.startswith("authsvc/"):
                seen.add(f"{frame[: frame.rfind(' (')].strip()} ({file})")
        for name in seen:
            inclusive[name] = inclusive.get(name, 0) + samples

    def top(counts: dict[str, int]) -> list[tuple[str, float]]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
        return [(name, count / max(1, total)) for name, count in best]

    return total, top(by_package), top(inclusive)


def profile(
    mode: str,
    duration: float,
    tmp: Path,
    wrk: Wrk,
    targets: dict[str, tuple[Server, str, Callable[[float], str]]],
    master: int,
    marker: str = "ThreadWorker.handle ",
) -> dict[str, Any]:
    """One more run of each target with py-spy sampling every server worker (a keep-alive
    connection stays with one worker): ``wall``, every thread serving a request, waits included
    (locks, the database, fsync); ``gil``, only the thread holding the GIL (CPU in Python)."""
    spy = shutil.which("py-spy") or str(BIN / "py-spy")
    pids = workers_of(master)
    what = "threads serving requests" if mode == "wall" else "the thread holding the GIL"
    say(f"\nprofile ({mode}): py-spy on the {len(pids)} workers' {what}, {duration:.0f} s each")
    found: dict[str, Any] = {}
    for name, (who, url, script) in targets.items():
        recorders = []
        for pid in pids:
            out = tmp / f"profile-{mode}-{name.replace(' ', '-')}-{pid}.txt"
            argv = [spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(out)]
            argv += ["--duration", str(max(1, round(duration))), "--rate", "100"]
            if mode == "gil":
                argv.append("--gil")
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            recorders.append((out, proc))
        time.sleep(0.5)  # attached
        wrk.run(name, url, script(duration), duration, who)
        outs = []
        for out, proc in recorders:
            _, err = proc.communicate(timeout=duration + 60)
            if proc.returncode == 0 and out.is_file():
                outs.append(out)
            else:
                say(f"  {name}: py-spy failed: {err.decode(errors='replace').strip()[-300:]}")
        if not outs:
            continue
        total, packages, functions = top_costs(outs, 8, marker)
        found[name] = {
            "samples": total,
            "self by package": {k: round(v, 3) for k, v in packages},
            "authsvc inclusive": {k: round(v, 3) for k, v in functions},
        }
        say(
            f"  {name} ({total} samples): self time by package: "
            + ", ".join(f"{k} {v:.0%}" for k, v in packages)
        )
        for function, share in functions:
            say(f"      {share:>4.0%}  {function}")
    return found


def machine() -> str:
    """The CPU model and the number of cores, from /proc/cpuinfo."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = " ".join(line.split(":", 1)[1].split())
                break
    return f"{model}, {os.cpu_count()} cores"


def measure(
    args: argparse.Namespace,
    workers: int,
    tmp: Path,
    peer: Peer,
    instance: Instance,
    procs: Processes,
) -> int:
    revision = source_revision()
    say(f"authsvc: {revision}")
    workload = instance.prepare()
    server = instance.start(procs, args.server, workers, args.threads, tmp / f"{args.server}.log")
    if args.server == "granian":
        model = f"WSGI, {args.threads} blocking threads each"
    else:
        model = f"gthread, {args.threads} threads each" if args.threads > 1 else "sync"
    server_name = f"{args.server} {version(args.server)}"
    say(
        f"authsvc: {server_name}, {workers} workers ({model}, never recycled) "
        f"on {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"{args.db}, {instance.base}"
    )

    peer_auth = basic(*PEER_CLIENT)
    our_auth = basic(workload.client_id, workload.client_secret)
    tail = urllib.parse.urlencode(
        {"redirect_uri": REDIRECT_URI, "code_verifier": workload.verifier}
    )
    peer_cc_body = "grant_type=client_credentials&resource=" + urllib.parse.quote("urn:bench:jwt")
    our_cc_body = "grant_type=client_credentials"

    # --- one of each, checked, before any load ---
    status, body = post_form(
        f"{peer.base}/token",
        peer_auth,
        {"grant_type": "client_credentials", "resource": "urn:bench:jwt"},
    )
    check(status == 200 and body["access_token"].count(".") == 2, f"peer token: {body}")
    check(json.loads(b64(body["access_token"].split(".")[0]))["alg"] == "ES256", "peer ES256")
    status, body = post_form(
        f"{instance.base}/token", our_auth, {"grant_type": "client_credentials"}
    )
    check(status == 200 and body["access_token"].count(".") == 2, f"authsvc token: {body}")
    header = json.loads(b64(body["access_token"].split(".")[0]))
    check(header["alg"] == "ES256" and header["typ"] == "at+jwt", f"authsvc header {header}")

    def user_token() -> str:
        """A user's access token, from one code exchange (checked): authsvc's live 5 minutes."""
        [code] = instance.insert_codes(workload, 1, 600)
        status, body = post_form(
            f"{instance.base}/token",
            our_auth,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "code_verifier": workload.verifier,
            },
        )
        check(
            status == 200 and {"id_token", "access_token", "refresh_token"} <= set(body),
            f"authsvc code exchange: {body}",
        )
        return str(body["access_token"])

    user_access_token = user_token()  # the token a resource server would introspect
    peer_introspect = {"token": peer.userinfo_token, "token_type_hint": "access_token"}
    status, body = post_form(f"{peer.base}/token/introspection", peer_auth, peer_introspect)
    check(status == 200 and body.get("active") is True, f"peer introspection: {body}")
    status, body = post_form(
        f"{instance.base}/introspect",
        our_auth,
        {"token": user_access_token, "token_type_hint": "access_token"},
    )
    check(status == 200 and body.get("active") is True, f"authsvc introspection: {body}")
    check({"sub", "client_id", "scope", "exp", "acr", "auth_time"} <= set(body), f"{body}")

    # the GET endpoints: paths from each side's discovery
    status, _, peer_meta = get(f"{peer.base}/.well-known/openid-configuration")
    check(status == 200 and peer_meta.get("issuer") == peer.base, f"peer discovery: {peer_meta}")
    status, _, our_meta = get(f"{instance.base}/.well-known/openid-configuration")
    check(status == 200 and our_meta.get("issuer") == instance.base, f"authsvc discovery {status}")
    paths = {
        f"{side} {what}": urllib.parse.urlsplit(meta[key]).path
        for side, meta in (("peer", peer_meta), ("authsvc", our_meta))
        for what, key in (
            ("discovery", "issuer"),
            ("JWKS", "jwks_uri"),
            ("userinfo", "userinfo_endpoint"),
        )
    }
    paths["peer discovery"] = paths["authsvc discovery"] = "/.well-known/openid-configuration"
    bases = {"peer": peer.base, "authsvc": instance.base}
    caching: dict[str, dict[str, str | None]] = {}
    for side in bases:
        for what in ("discovery", "JWKS"):
            name = f"{side} {what}"
            status, headers, body = get(bases[side] + paths[name])
            ok = "issuer" in body if what == "discovery" else bool(body.get("keys"))
            check(status == 200 and ok, f"{name}: {status} {body}")
            caching[name] = {k: headers.get(k) for k in ("cache-control", "etag")}
    say("caching headers (PERFORMANCE.md: discovery and JWKS with correct Cache-Control/ETag):")
    for name, headers in caching.items():
        say(f"  {name:<18} Cache-Control: {headers['cache-control']}   ETag: {headers['etag']}")
    peer_bearer = f"Bearer {peer.userinfo_token}"
    status, _, body = get(peer.base + paths["peer userinfo"], peer_bearer)
    check(status == 200 and body.get("sub"), f"peer userinfo: {status} {body}")
    status, _, body = get(instance.base + paths["authsvc userinfo"], f"Bearer {user_access_token}")
    check(status == 200 and body.get("sub"), f"authsvc userinfo: {status} {body}")

    wrk = Wrk(tmp, args.connections, args.wrk_threads)
    per_run = max(1000, math.ceil(args.max_rate * args.duration))

    def with_codes(seconds: float) -> str:
        """Fresh codes for a run of ``seconds``, one file per wrk thread; the script."""
        n = max(500, math.ceil(args.max_rate * seconds))
        codes = instance.insert_codes(workload, n, lifetime=3600)
        share = math.ceil(n / args.wrk_threads)
        for i in range(args.wrk_threads):
            (tmp / f"codes-{i}.txt").write_text(
                "\n".join(codes[i * share : (i + 1) * share]) + "\n"
            )
        return codes_script("/token", our_auth, tmp, "&" + tail)

    def our_introspection(_seconds: float) -> str:
        nonlocal user_access_token
        user_access_token = user_token()
        body = urllib.parse.urlencode(
            {"token": user_access_token, "token_type_hint": "access_token"}
        )
        return form_script("/introspect", our_auth, body)

    def our_userinfo(_seconds: float) -> str:
        nonlocal user_access_token
        user_access_token = user_token()
        return get_script(paths["authsvc userinfo"], f"Bearer {user_access_token}")

    def static(script: str) -> Callable[[float], str]:
        return lambda _seconds: script

    pg_name = sa.engine.make_url(instance.env["AUTHSVC_DATABASE_URL"]).database
    ours = Server(server.pid, pg_name if args.db == "postgresql" else None)
    theirs = Server(peer.pid)
    # name → (who serves it, its URL, the script for a run of so many seconds); peer and authsvc
    # side by side, so that both see about the same noise
    targets: dict[str, tuple[Server, str, Callable[[float], str]]] = {
        "peer client_credentials": (
            theirs,
            f"{peer.base}/token",
            static(form_script("/token", peer_auth, peer_cc_body)),
        ),
        "authsvc client_credentials": (
            ours,
            f"{instance.base}/token",
            static(form_script("/token", our_auth, our_cc_body)),
        ),
        "authsvc code exchange": (ours, f"{instance.base}/token", with_codes),
        "peer introspection": (
            theirs,
            f"{peer.base}/token/introspection",
            static(
                form_script(
                    "/token/introspection", peer_auth, urllib.parse.urlencode(peer_introspect)
                )
            ),
        ),
        "authsvc introspection": (ours, f"{instance.base}/introspect", our_introspection),
        "peer userinfo": (
            theirs,
            peer.base + paths["peer userinfo"],
            static(get_script(paths["peer userinfo"], peer_bearer)),
        ),
        "authsvc userinfo": (ours, instance.base + paths["authsvc userinfo"], our_userinfo),
    }
    for what in ("discovery", "JWKS"):
        for side, who in (("peer", theirs), ("authsvc", ours)):
            name = f"{side} {what}"
            targets[name] = (who, bases[side] + paths[name], static(get_script(paths[name])))

    say(
        f"wrk: {args.connections} keep-alive connections, {args.wrk_threads} threads, "
        f"{args.repeat} × {args.duration:.0f} s per endpoint (median), {args.warmup:.0f} s warm-up"
    )
    say(
        f"codes: {per_run:,} per run, INSERTED DIRECTLY into authorization_codes as "
        "save_authorization_code writes them (not through /authorize), living 1 h instead of 60 s"
    )
    served = 0  # requests authsvc answered to wrk (warm-up included)

    def run_one(name: str, seconds: float) -> Run:
        nonlocal served
        who, url, script = targets[name]
        run = wrk.run(name, url, script(seconds), seconds, who)
        if who is ours:
            served += run.requests
        return run

    rss_start = workers_rss(server.pid)
    peer_rss_start = rss_mb(peer.pid)
    if args.warmup > 0:
        for name in targets:
            run_one(name, args.warmup)

    runs: dict[str, list[Run]] = {name: [] for name in targets}
    rss_rounds: list[dict[int, float]] = []
    for round_ in range(args.repeat):
        for name in targets:
            run = run_one(name, args.duration)
            runs[name].append(run)
            flag = "" if run.valid else "   <-- INVALID"
            say(
                f"  [{round_ + 1}/{args.repeat}] {name:<27}{run.rate:>7,.0f} req/s  "
                f"non-2xx {run.non2xx}  socket errors {run.socket_errors}  "
                f"p50 {run.p50_ms:.1f} ms  p99 {run.p99_ms:.0f} ms  "
                f"cpu {run.cpu_ms:.2f} ms/req (sys {run.sys_ms:.2f})  "
                f"others {run.other_cores:.1f} cores{flag}"
            )
            check(server.poll() is None, f"{args.server} is still running")
        rss_rounds.append(workers_rss(server.pid))
        say(
            f"  after round {round_ + 1}: authsvc served {served:,} requests; workers' VmRSS "
            + " ".join(f"{mb:.1f}" for mb in rss_rounds[-1].values())
            + " MB"
        )

    # the introspected tokens are still active; the exchanged codes were persisted
    status, body = post_form(f"{peer.base}/token/introspection", peer_auth, peer_introspect)
    check(status == 200 and body.get("active") is True, f"peer introspection after: {body}")
    status, body = post_form(
        f"{instance.base}/introspect",
        our_auth,
        {"token": user_access_token, "token_type_hint": "access_token"},
    )
    check(status == 200 and body.get("active") is True, f"authsvc introspection after: {body}")
    used = instance.count_used_codes()
    sent = sum(r.requests for r in runs["authsvc code exchange"])
    rss_end = workers_rss(server.pid)
    peer_rss_end = rss_mb(peer.pid)

    rates = {name: statistics.median(r.rate for r in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(r.cpu_ms for r in rs) for name, rs in runs.items()}
    sys_cpu = {name: statistics.median(r.sys_ms for r in rs) for name, rs in runs.items()}
    others = statistics.mean(r.other_cores for rs in runs.values() for r in rs)
    valid = all(r.valid for rs in runs.values() for r in rs)
    say(f"\nmedians of {args.repeat} × {args.duration:.0f} s ({args.db}):")
    for name, rs in runs.items():
        non2xx = sum(r.non2xx for r in rs)
        say(
            f"  {name:<27}{rates[name]:>7,.0f} req/s   non-2xx {non2xx}   "
            f"server cpu {cpu[name]:.2f} ms/req (of which system {sys_cpu[name]:.2f})"
        )
    say(
        f"  code exchanges answered {sent:,}; codes used and tied to a token family "
        f"in the database: {used:,} (more: warm-up, checks, requests cut off by wrk's end)"
    )
    say(
        f"  other processes on this machine kept {others:.1f} of {os.cpu_count()} cores busy "
        "on average during the runs"
    )
    if args.db == "postgresql":
        say("  (authsvc's server cpu includes its PostgreSQL backends)")

    limit = "PERFORMANCE.md: ≤ 120 MB after 100,000"
    say(f"\nmemory: VmRSS of each {args.server} worker, MB ({limit})")
    same = set(rss_start) == set(rss_end)
    for pid, mb in rss_start.items():
        end = rss_end.get(pid)
        say(
            f"  worker {pid}: start {mb:.1f}, after each round "
            + " ".join(f"{r.get(pid, math.nan):.1f}" for r in rss_rounds)
            + (f", end {end:.1f} ({end - mb:+.1f})" if end is not None else ", gone at the end")
        )
    if not same:
        say(f"  the workers changed during the runs: {sorted(rss_start)} → {sorted(rss_end)}")
    peak = max(rss_end.values(), default=math.nan)
    say(
        f"  authsvc served {served:,} requests to wrk (warm-up included; plus a few checks), "
        f"~{served / max(1, len(rss_end)):,.0f} per worker; largest worker at the end "
        f"{peak:.1f} MB: {'≤' if peak <= MEMORY_LIMIT_MB else 'ABOVE'} {MEMORY_LIMIT_MB} MB"
        + ("" if served >= 100_000 else " (fewer than the target's 100,000 requests)")
    )
    say(
        f"  the peer (one node process): start {peer_rss_start or 0:.1f}, "
        f"end {peer_rss_end or 0:.1f}"
    )

    say("\nratios (PERFORMANCE.md): req/s ÷ req/s; and by CPU per request, peer ÷ authsvc")
    ratios: dict[str, float] = {}
    cpu_ratios: dict[str, float] = {}
    for label, (ours_name, theirs_name, target) in TARGETS.items():
        ratio = rates[ours_name] / rates[theirs_name]
        ratios[label] = ratio
        cpu_ratios[label] = cpu[theirs_name] / cpu[ours_name]
        verdict = "met" if ratio >= target else f"MISSED by {1 - ratio / target:.0%}"
        say(
            f"  {label:<14} {ours_name} ÷ {theirs_name}: {ratio:.2f}  (target ≥ {target})  "
            f"{verdict};  by cpu {cpu_ratios[label]:.2f}"
        )
    if not valid:
        say("\nINVALID: some runs had non-2xx answers or ran out of codes; see above")
    profiles: dict[str, Any] = {}
    if args.profile:  # after the measured runs, which it would slow down
        for mode in ("wall", "gil"):
            ours_only = {name: t for name, t in targets.items() if t[0] is ours}
            profiles[mode] = profile(
                mode,
                args.duration,
                tmp,
                wrk,
                ours_only,
                server.pid,
                str(SERVERS[args.server]["marker"]),
            )
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "authsvc": revision,
        "peer": f"oidc-provider {peer.version}, node {node_version()}",
        "db": args.db,
        "server": server_name,
        "worker model": model,
        "workers": workers,
        "threads": args.threads,
        "duration": args.duration,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "connections": args.connections,
        "valid": valid,
        **{name: round(rate) for name, rate in rates.items()},
        **{f"ratio {label}": round(r, 3) for label, r in ratios.items()},
        **{f"cpu ms/req {name}": round(c, 3) for name, c in cpu.items()},
        **{f"cpu ratio {label}": round(r, 3) for label, r in cpu_ratios.items()},
        **{f"sys ms/req {name}": round(c, 3) for name, c in sys_cpu.items()},
        "other cores busy": round(others, 2),
        "non2xx": {name: [r.non2xx for r in rs] for name, rs in runs.items()},
        "requests": {name: [r.requests for r in rs] for name, rs in runs.items()},
        "authsvc requests served": served,
        "worker rss MB": {
            "start": [round(mb, 1) for mb in rss_start.values()],
            "rounds": [[round(mb, 1) for mb in r.values()] for r in rss_rounds],
            "end": [round(mb, 1) for mb in rss_end.values()],
            "same workers": same,
        },
        "peer rss MB": {
            "start": round(peer_rss_start or 0, 1),
            "end": round(peer_rss_end or 0, 1),
        },
        "caching": caching,
        **({"profile": profiles} if profiles else {}),
    }
    emit(report, f"oidc-vs-peer-{args.db}", args.results)
    return 0 if valid else 1


def b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


if __name__ == "__main__":
    raise SystemExit(main())
