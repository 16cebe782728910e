"""The least a token request can cost in Python on this machine: NOT authsvc, a yardstick.

``bench/token_floor.py`` serves this WSGI application under granian, as authsvc is served, to
measure what the work of a token request costs with nothing else around it: no framework, no
OAuth library, no ORM, one hard-coded client, no rate limit, no metrics, no logs. It answers:

- ``POST /<mode>/token`` with ``grant_type=client_credentials`` and the one client's Basic
  credentials (the secret's keyed SHA-256 compared in constant time with the stored one, as
  PERFORMANCE.md asks): an RFC 9068 access token signed ES256 with joserfc
  (the JOSE library authsvc signs with, the key imported once); then, by ``<mode>``:

  - ``sign``: nothing stored (what the peer does, whose store is in memory);
  - ``persist``: the token's row inserted and durably committed (SQLite, WAL,
    ``synchronous = FULL``, as authsvc configures it), the concurrent requests of a process in one
    transaction (a group commit, as authsvc's ``GroupCommit``), the processes taking turns on an
    ``flock`` (as authsvc's ``WriterQueue``), nobody answered before their row is committed (a
    failed transaction fails every request of its group);
  - ``audit``: as ``persist``, plus one hash-chained audit event per token (HMAC-SHA-256 over the
    previous hash and the event's canonical JSON, the chain's head read once per transaction and
    advanced once per event, as authsvc's audit trail does);

- ``GET /userinfo`` with ``Authorization: Bearer`` a token it issued: the JWT verified (its
  signature, ``typ``, issuer, audience, expiry), its row read (not revoked, not expired), the
  claims answered.

``GET /`` answers 200 once the worker is up; anything else is a 400 or a 401. The database file
and its tables are made by the benchmark (``FLOOR_DB``, :func:`create`); the signing key is a PEM
in ``FLOOR_KEY``, and ``FLOOR_SECRET`` (hex) keys the audit chain and the client secret's hash:
both are shared by the workers (a token issued by one verifies on the other; one audit chain).
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
#: the audit trail's HMAC key and the key of the client secret's hash: shared by the workers (one
#: chain, one stored hash), given by the benchmark (``FLOOR_SECRET``, hex)
_SECRET = bytes.fromhex(os.environ.get("FLOOR_SECRET") or secrets.token_hex(32))
_AUDIT_KEY = hmac.new(_SECRET, b"audit", hashlib.sha256).digest()
_HASH_KEY = hmac.new(_SECRET, b"client secret", hashlib.sha256).digest()
#: the one client's secret as stored: a keyed SHA-256, as PERFORMANCE.md asks (never the secret)
_STORED = {CLIENT[0]: hmac.new(_HASH_KEY, CLIENT[1].encode(), hashlib.sha256).digest()}
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


class _Ticket:
    __slots__ = ("audit", "done", "error", "row")

    def __init__(self, row: tuple[str, str, int], audit: bool) -> None:
        self.row = row
        self.audit = audit
        self.done = False
        self.error: BaseException | None = None


class _GroupCommit:
    """The rows of this process's concurrent requests, committed in one transaction; each
    request returns once its row is committed, or raises what made the transaction fail."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._pending: list[_Ticket] = []
        self._busy = False

    def commit(self, row: tuple[str, str, int], audit: bool) -> None:
        ticket = _Ticket(row, audit)
        with self._changed:
            self._pending.append(ticket)
            while self._busy and not ticket.done:
                self._changed.wait()
            leader = not ticket.done
            if leader:
                self._busy = True
                group, self._pending = self._pending, []
        if leader:
            try:
                self._write(group)
            except BaseException as exc:
                for member in group:
                    member.error = exc
            finally:
                with self._changed:
                    for member in group:
                        member.done = True
                    self._busy = False
                    self._changed.notify_all()
        if ticket.error is not None:
            raise ticket.error

    @staticmethod
    def _write(group: list[_Ticket]) -> None:
        db = _connection()
        fcntl.flock(_writers(), fcntl.LOCK_EX)  # the other workers wait in the kernel, not polling
        try:
            _transaction(db, group)
        finally:
            fcntl.flock(_writers(), fcntl.LOCK_UN)


def _writers() -> int:
    """This process's descriptor of the writers' lock file (opened after the fork)."""
    global _writers_fd
    if _writers_fd is None:
        _writers_fd = os.open(_DB + ".writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return _writers_fd


_writers_fd: int | None = None


def _transaction(db: sqlite3.Connection, group: list[_Ticket]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        insert = "INSERT INTO tokens (jti, client_id, expires_at) VALUES (?, ?, ?)"
        db.executemany(insert, [ticket.row for ticket in group])
        audited = [ticket.row for ticket in group if ticket.audit]
        if audited:
            seq, digest = db.execute("SELECT seq, hash FROM head WHERE chain = 0").fetchone()
            for jti, client_id, expires_at in audited:
                event = {
                    "tag": "token.issued",
                    "actor": f"client:{client_id}",
                    "subject": f"client:{client_id}",
                    "data": {"jti": jti, "client_id": client_id, "expires_at": expires_at},
                    "occurred_at": time.time(),
                }
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


def _authenticated(header: str) -> bool:
    """Basic credentials of the one client: its secret's keyed hash compared in constant time."""
    if header[:6].lower() != "basic ":
        return False
    try:
        client_id, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except ValueError:
        return False
    stored = _STORED.get(client_id)
    presented = hmac.new(_HASH_KEY, secret.encode(), hashlib.sha256).digest()
    return stored is not None and hmac.compare_digest(presented, stored)


def _token(environ: dict[str, Any], respond: Respond, mode: str) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    form = parse_qs(environ["wsgi.input"].read(min(length, 4096)).decode("utf-8", "replace"))
    if not _authenticated(environ.get("HTTP_AUTHORIZATION", "")):
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
        token = jwt.decode(header[7:].strip(), _KEY, algorithms=["ES256"])
        claims = token.claims
        if token.header.get("typ") != "at+jwt" or claims.get("iss") != ISSUER:
            raise ValueError("not an access token of this issuer")
        if claims.get("aud") != ISSUER:
            raise ValueError("not for this audience")
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
