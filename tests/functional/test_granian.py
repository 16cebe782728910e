"""granian, as docs/deployment.md runs it: ``granian --interface wsgi --factory
'authsvc.wsgi:worker_app' --workers 2 …``. Each worker builds its own application after the fork
and starts its outbox thread without waiting for a request; discovery, JWKS (answered before
Flask) and the token endpoint work; SIGTERM stops it all."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from authsvc.app import Services
from authsvc.config import load_settings
from authsvc.mail import messages
from authsvc.oidc.clients import register
from authsvc.outbox.service import enqueue

from ..conftest import CHEAP
from ..mailserver import SmtpServer
from ..servers import free_port, wait_until

GRANIAN = Path(sys.executable).with_name("granian")


def children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def started(log: Path) -> set[int]:
    """The workers granian has logged as started (``[INFO] Started worker-N``)."""
    text = log.read_text(errors="replace")
    return {int(n) for n in re.findall(r"Started worker-(\d+)", text)}


@pytest.fixture
def granian(env: dict[str, str], smtp_server: SmtpServer, tmp_path: Path) -> Iterator[dict]:  # type: ignore[type-arg]
    port = free_port()
    environment = {
        **os.environ,
        **env,
        "AUTHSVC_ISSUER": f"http://127.0.0.1:{port}",
        "AUTHSVC_SMTP_HOST": "127.0.0.1",
        "AUTHSVC_SMTP_PORT": str(smtp_server.port),
        "AUTHSVC_DB_POOL_SIZE": "3",
        "AUTHSVC_DB_MAX_OVERFLOW": "2",
        "AUTHSVC_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "granian.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(GRANIAN),
                *("--interface", "wsgi", "--factory", "authsvc.wsgi:worker_app"),
                *("--host", "127.0.0.1", "--port", str(port)),
                *("--workers", "2", "--blocking-threads", "2", "--http", "1", "--no-ws"),
            ],
            env=environment,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield {"proc": proc, "base": f"http://127.0.0.1:{port}", "env": environment, "log": log}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def get(
    url: str, headers: dict[str, str] | None = None, *, data: bytes | None = None
) -> tuple[int, Message, bytes]:
    """A GET (a POST with ``data``); an HTTP error is an answer like any other."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


@pytest.mark.slow
def test_granian_workers_deliver_mail_and_serve_discovery_and_tokens(
    granian: dict,
    smtp_server: SmtpServer,  # type: ignore[type-arg]
) -> None:
    proc, base = granian["proc"], granian["base"]
    services = Services.from_settings(load_settings(granian["env"]), argon2=CHEAP)
    try:
        # before any HTTP request: the workers' outbox threads deliver a queued mail
        wait_until(lambda: len(children(proc.pid)) == 2, 30, "granian's 2 workers")
        # and both started (their application built, their signal handlers set): granian 2.8
        # loses a SIGTERM that reaches a worker still starting (it then waits for another, until
        # --workers-kill-timeout, which docs/deployment.md sets), and this test ends with one
        wait_until(lambda: started(granian["log"]) == {1, 2}, 30, "granian's 2 workers started")
        with services.db.transaction() as db:
            enqueue(
                db,
                "mail",
                messages.verification_code(
                    to="anne@example.lu", name="Anne Muller", code="123456", lang="fr"
                ),
                summary="granian test",
                sealer=services.sealer,
            )
        try:
            wait_until(lambda: smtp_server.inbox.messages, 30, "the queued mail delivered")
        except AssertionError as exc:  # with what granian said meanwhile
            raise AssertionError(f"{exc}\n{granian['log'].read_text(errors='replace')}") from None
        [mail] = smtp_server.inbox.messages
        assert mail["To"] == "anne@example.lu"
        assert proc.poll() is None, granian["log"].read_text()

        # discovery and JWKS (the fast path), with their caching headers and 304
        status, headers, body = get(f"{base}/.well-known/openid-configuration")
        assert status == 200, body
        meta = json.loads(body)
        assert meta["issuer"] == base
        assert headers["Cache-Control"] == "public, max-age=3600"
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert headers["X-Content-Type-Options"] == "nosniff"
        status, headers, body = get(meta["jwks_uri"], {"X-Request-Id": "granian-1"})
        assert status == 200 and json.loads(body)["keys"]
        assert headers["X-Request-Id"] == "granian-1"
        status, again, body = get(meta["jwks_uri"], {"If-None-Match": headers["ETag"]})
        assert status == 304 and body == b"" and again["ETag"] == headers["ETag"]

        # the token endpoint (Flask): a client_credentials grant
        with services.db.transaction() as db:
            reg = register(
                db,
                name="Connector",
                redirect_uris=[],
                grants=["client_credentials"],
                hasher=services.hasher,
                actor="test",
                clock=services.clock,
            )
        secret = base64.b64encode(f"{reg.client_id}:{reg.client_secret}".encode()).decode()
        request = urllib.request.Request(
            meta["token_endpoint"],
            data=urllib.parse.urlencode({"grant_type": "client_credentials"}).encode(),
            headers={"Authorization": f"Basic {secret}"},
        )
        for _ in range(4):  # whichever worker answers
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
                token = json.loads(response.read())
            assert token["token_type"].lower() == "bearer"
            assert token["access_token"].count(".") == 2
        # a POST to discovery is Flask's 405, in JSON
        status, _, body = get(f"{base}/.well-known/openid-configuration", data=b"x=1")
        assert status == 405 and json.loads(body)["error"] == "method_not_allowed"
        assert proc.poll() is None
    finally:
        services.close()

    # SIGTERM: the master and its workers stop
    workers = children(proc.pid)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    wait_until(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), 10, "workers gone")


def test_an_invalid_setting_stops_granian_with_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    started = time.monotonic()
    done = subprocess.run(
        [
            str(GRANIAN),
            *("--interface", "wsgi", "--factory", "authsvc.wsgi:worker_app"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            *("--blocking-threads", "1"),
        ],
        env={**os.environ, **env, "AUTHSVC_DB_POOL_SIZE": "zero"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "error: AUTHSVC_DB_POOL_SIZE: expected a whole number, got 'zero'" in done.stderr
    assert time.monotonic() - started < 60
