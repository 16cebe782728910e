"""Real servers for the multi-instance and fault tests: gunicorn instances of authsvc, a dedicated
PostgreSQL cluster, a dedicated Redis, and an HTTP client that behaves like the Flask test client.

Everything listens on 127.0.0.1 only, on free ports, and is stopped (and its files removed) by the
fixture that started it.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONF = ROOT / "gunicorn.conf.py"
REDIS_URL = os.environ.get("AUTHSVC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


# --- an HTTP client shaped like Flask's test client ----------------------------------------------


class Response:
    def __init__(self, status: int, headers: Message, data: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.data = data

    @property
    def json(self) -> Any:
        if "json" not in (self.headers.get("Content-Type") or ""):
            return None
        return json.loads(self.data)

    def get_data(self, as_text: bool = False) -> Any:
        return self.data.decode() if as_text else self.data


class HttpClient:
    """``get``/``post`` like ``app.test_client()``, over real HTTP to ``base`` (no redirects are
    followed; one cookie jar, sent to whichever instance ``base`` names — as a load balancer in
    front of several instances would)."""

    def __init__(self, base: str, *, cookies: dict[str, str] | None = None, timeout: float = 30):
        self.base = base.rstrip("/")
        self.cookies = cookies if cookies is not None else {}
        self.timeout = timeout

    def at(self, base: str) -> HttpClient:
        """The same browser (same cookies), talking to another instance."""
        return HttpClient(base, cookies=self.cookies, timeout=self.timeout)

    def open(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        parts = urlsplit(self.base)
        send = {"Connection": "close", **(headers or {})}
        body: bytes | None = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            send["Content-Type"] = "application/json"
        elif data is not None:
            body = urlencode(data).encode()
            send["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            send["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=send)
            raw = conn.getresponse()
            payload = raw.read()
        finally:
            conn.close()
        for header in raw.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            attributes = rest.lower()
            if "max-age=0" in attributes or "expires=thu, 01 jan 1970" in attributes or not value:
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value
        return Response(raw.status, raw.headers, payload)

    def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> Response:
        return self.open("GET", path, headers=headers)

    def post(
        self,
        path: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return self.open("POST", path, json_body=json, data=data, headers=headers)


# --- gunicorn instances ----------------------------------------------------------------------------


class Instance:
    """One ``gunicorn -c gunicorn.conf.py 'authsvc.wsgi:app'`` on a loopback port."""

    def __init__(self, name: str, env: Mapping[str, str], *, workers: int = 1, threads: int = 4):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env)
        self.workers = workers
        self.threads = threads
        self.log = Path(tempfile.mkstemp(prefix=f"authsvc-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Instance:
        return self.spawn().wait_ready(timeout)

    def spawn(self) -> Instance:
        gunicorn = Path(sys.executable).with_name("gunicorn")
        args = [
            str(gunicorn),
            "-c",
            str(GUNICORN_CONF),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "authsvc.wsgi:app",
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                # not the source tree: a stray .env there must not configure the instance
                cwd=self.env.get("AUTHSVC_INSTANCE_DIR") or tempfile.gettempdir(),
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 60) -> Instance:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                response = self.client().get("/healthz")
                if response.status_code == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout}s:\n{self.output()}")

    def client(self, cookies: dict[str, str] | None = None) -> HttpClient:
        return HttpClient(self.url, cookies=cookies)

    def output(self, tail: int | None = 6000) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return text if tail is None else text[-tail:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # gunicorn's graceful stop
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None

    def remove_log(self) -> None:
        self.log.unlink(missing_ok=True)


# --- PostgreSQL -------------------------------------------------------------------------------------


def postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def pg_reachable(admin_url: str) -> str | None:
    """None when the server answers, else why not."""
    engine = sa.create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return None
    except sa.exc.OperationalError as exc:
        return str(exc.orig).strip().splitlines()[0]
    finally:
        engine.dispose()


class Database:
    """A fresh database on a PostgreSQL server, dropped (connections and all) afterwards."""

    def __init__(self, admin_url: str, prefix: str = "authsvc_t") -> None:
        self.admin_url = admin_url
        self.name = f"{prefix}_{os.getpid()}_{os.urandom(4).hex()}"
        self.url = sa.engine.make_url(admin_url).set(database=self.name).render_as_string(False)

    def create(self) -> Database:
        engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        engine.dispose()
        return self

    def drop(self) -> None:
        engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            engine.dispose()


class PostgresCluster:
    """A PostgreSQL cluster of the test's own (``initdb`` in a temporary folder, a free port),
    so that a test can stop and start it without touching the machine's server. As root, the
    cluster runs as the ``postgres`` user (``initdb`` refuses root)."""

    def __init__(self) -> None:
        initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL's initdb and pg_ctl are not installed")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.port = free_port()
        # as root, in /tmp itself: the postgres user cannot enter root's own temporary folders
        where = "/tmp" if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="authsvc-pg-", dir=where))
        self.data = self.folder / "data"
        self.logfile = self.folder / "server.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise RuntimeError("running as root, and runuser is missing to run initdb")
            shutil.chown(self.folder, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.folder.chmod(0o700)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr[-2000:]}")

    def init(self) -> PostgresCluster:
        self._run(
            self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
            "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder}"
            " -c fsync=off -c max_connections=60"
        )
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.logfile), "-o", options,
                  "-w", "-t", "30", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


# --- Redis ------------------------------------------------------------------------------------------


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_unreachable(url: str = REDIS_URL) -> str | None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    return None if redis_ping(host, port) else f"Redis does not answer at {host}:{port}"


def redis_delete_prefix(url: str, prefix: str) -> None:
    """Delete every key of a test (its keys all contain ``prefix``)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class RedisServer:
    """A ``redis-server`` of the test's own on a free port (no persistence); ``kill()`` is a
    crash, ``start()`` brings it back on the same port."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.exe = exe
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="authsvc-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: redis_ping("127.0.0.1", self.port), 10, "redis-server answers PING")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


class SilentServer:
    """Accepts TCP connections and never answers: a hung Redis (or any server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.conns:
            conn.close()
        self.sock.close()
