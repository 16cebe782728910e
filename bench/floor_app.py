"""The least a token request can cost in Python on this machine: NOT authsvc, a yardstick.

``bench/token_floor.py`` serves this WSGI application under granian, as authsvc is served, to
measure what the work of a token request costs with nothing else around it: no framework, no
OAuth library, no ORM, one hard-coded client, no rate limit, no metrics, no logs. It answers:

- ``POST /<mode>/token`` with ``grant_type=client_credentials`` and the one client's Basic
  credentials (compared in constant time): an RFC 9068 access token signed ES256 with joserfc
  (the JOSE library authsvc signs with, the key imported once); then, by ``<mode>``:

  - ``sign``: nothing stored (what the peer does, whose store is in memory);
  - ``persist``: the token's row inserted and durably committed (SQLite, WAL,
    ``synchronous = FULL``, as authsvc configures it), the concurrent requests of a process in one
    transaction (a group commit, as authsvc's ``GroupCommit``), the processes taking turns on an
    ``flock`` (as authsvc's ``WriterQueue``), nobody answered before their row is committed;
  - ``audit``: as ``persist``, plus one hash-chained audit event per token (HMAC-SHA-256 over the
    previous hash and the event's canonical JSON, the chain's head read once per transaction and
    advanced once per event, as authsvc's audit trail does);

- ``GET /userinfo`` with ``Authorization: Bearer`` a token it issued: the JWT verified, its row
  read (not revoked, not expired), the claims answered.

``GET /`` answers 200 once the worker is up; anything else is a 400 or a 401. The database file
and its tables are made by the benchmark (``FLOOR_DB``, :func:`create`); the signing key is a PEM
in ``FLOOR_KEY``, shared by the workers (a token issued by one verifies on the other).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

CLIENT = ("floor", "floor-secret")
ISSUER = "http://127.0.0.1"
LIFETIME = 300
MODES = ("sign", "persist", "audit")

_DB = os.environ.get("FLOOR_DB", "")
_BASIC = "Basic " + base64.b64encode(":".join(CLIENT).encode()).decode()
_AUDIT_KEY = secrets.token_bytes(32)
_local = threading.local()


def new_key() -> str:
    """A P-256 private key, as a PEM (for ``FLOOR_KEY``)."""
    return ECKey.generate_key("P-256", private=True).as_pem(private=True).decode()


_KEY = ECKey.import_key(os.environ.get("FLOOR_KEY") or new_key())


SCHEMA = (
    "CREATE TABLE tokens (jti TEXT PRIMARY KEY, client_id TEXT NOT NULL,"
    " expires_at INTEGER NOT NULL, revoked_at INTEGER)",
    "CREATE TABLE events (chain INTEGER, seq INTEGER, body TEXT NOT NULL, hash TEXT NOT NULL,"
    " PRIMARY KEY (chain, seq))",
    "CREATE TABLE head (chain INTEGER PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL)",
    "INSERT INTO head VALUES (0, 0, '0')",
)


def create(path: str) -> None:
    """The floor's database: its tables, in WAL mode (called by the benchmark, once)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for statement in SCHEMA:
        db.execute(statement)
    db.close()


def _connection() -> sqlite3.Connection:
    db: sqlite3.Connection | None = getattr(_local, "db", None)
    if db is None:
        db = sqlite3.connect(_DB, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA busy_timeout = 30000")
        _local.db = db
    return db


class _GroupCommit:
    """The rows of this process's concurrent requests, committed in one transaction."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._pending: list[list[Any]] = []
        self._busy = False

    def commit(self, row: tuple[str, str, int], audit: bool) -> None:
        ticket: list[Any] = [row, False]
        with self._changed:
            self._pending.append(ticket)
            while self._busy and not ticket[1]:
                self._changed.wait()
            if ticket[1]:
                return
            self._busy = True
            group, self._pending = self._pending, []
        try:
            self._write([t[0] for t in group], audit)
        finally:
            with self._changed:
                for t in group:
                    t[1] = True
                self._busy = False
                self._changed.notify_all()

    @staticmethod
    def _write(rows: list[tuple[str, str, int]], audit: bool) -> None:
        db = _connection()
        fcntl.flock(_writers(), fcntl.LOCK_EX)  # the other workers wait in the kernel, not polling
        try:
            _transaction(db, rows, audit)
        finally:
            fcntl.flock(_writers(), fcntl.LOCK_UN)


def _writers() -> int:
    """This process's descriptor of the writers' lock file (opened after the fork)."""
    global _writers_fd
    if _writers_fd is None:
        _writers_fd = os.open(_DB + ".writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return _writers_fd


_writers_fd: int | None = None


def _transaction(db: sqlite3.Connection, rows: list[tuple[str, str, int]], audit: bool) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany("INSERT INTO tokens (jti, client_id, expires_at) VALUES (?, ?, ?)", rows)
        if audit:
            seq, digest = db.execute("SELECT seq, hash FROM head WHERE chain = 0").fetchone()
            for jti, client_id, _ in rows:
                event = {"tag": "token.issued", "jti": jti, "client_id": client_id}
                body = json.dumps(event, sort_keys=True, separators=(",", ":"))
                message = digest.encode() + b"\n" + body.encode()
                digest = hmac.new(_AUDIT_KEY, message, hashlib.sha256).hexdigest()
                seq += 1
                db.execute("INSERT INTO events VALUES (0, ?, ?, ?)", (seq, body, digest))
                db.execute("UPDATE head SET seq = ?, hash = ? WHERE chain = 0", (seq, digest))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


_commits = _GroupCommit()

Respond = Callable[..., Any]


def _json(respond: Respond, status: str, value: dict[str, Any]) -> list[bytes]:
    body = json.dumps(value).encode()
    respond(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]


def _token(environ: dict[str, Any], respond: Respond, mode: str) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    form = parse_qs(environ["wsgi.input"].read(min(length, 4096)).decode("utf-8", "replace"))
    if not hmac.compare_digest(environ.get("HTTP_AUTHORIZATION", "").encode(), _BASIC.encode()):
        return _json(respond, "401 Unauthorized", {"error": "invalid_client"})
    if form.get("grant_type") != ["client_credentials"]:
        return _json(respond, "400 Bad Request", {"error": "unsupported_grant_type"})
    now = int(time.time())
    jti = secrets.token_urlsafe(18)
    claims = {
        "iss": ISSUER,
        "sub": CLIENT[0],
        "aud": ISSUER,
        "client_id": CLIENT[0],
        "scope": "",
        "iat": now,
        "exp": now + LIFETIME,
        "jti": jti,
    }
    token = jwt.encode({"typ": "at+jwt", "alg": "ES256", "kid": "floor"}, claims, _KEY)
    if mode != "sign":
        _commits.commit((jti, CLIENT[0], now + LIFETIME), audit=mode == "audit")
    answer = {"access_token": token, "token_type": "Bearer", "expires_in": LIFETIME}
    return _json(respond, "200 OK", answer)


def _userinfo(environ: dict[str, Any], respond: Respond) -> list[bytes]:
    header = environ.get("HTTP_AUTHORIZATION", "")
    try:
        if header[:7].lower() != "bearer ":
            raise ValueError("no bearer token")
        claims = jwt.decode(header[7:].strip(), _KEY, algorithms=["ES256"]).claims
        now = int(time.time())
        row = _connection().execute(
            "SELECT 1 FROM tokens WHERE jti = ? AND revoked_at IS NULL AND expires_at > ?",
            (claims.get("jti"), now),
        )
        if row.fetchone() is None or claims.get("exp", 0) <= now:
            raise ValueError("not live")
    except (JoseError, ValueError):
        return _json(respond, "401 Unauthorized", {"error": "invalid_token"})
    return _json(respond, "200 OK", {"sub": claims["sub"], "client_id": claims["client_id"]})


def app(environ: dict[str, Any], start_response: Respond) -> Iterable[bytes]:
    method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
    mode, _, endpoint = path.strip("/").partition("/")
    if method == "POST" and endpoint == "token" and mode in MODES:
        return _token(environ, start_response, mode)
    if method == "GET" and path == "/":
        return _json(start_response, "200 OK", {"floor": MODES})
    if method == "GET" and path == "/userinfo":
        return _userinfo(environ, start_response)
    return _json(start_response, "400 Bad Request", {"error": "invalid_request"})
