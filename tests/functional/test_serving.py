"""Serving: `authsvc serve` for development, gunicorn 'authsvc.wsgi:app' for production."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ..conftest import run_authsvc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[str], timeout: float = 20) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"server exited with {proc.returncode}: {err[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read()
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {timeout}s")


@pytest.fixture
def stop():  # type: ignore[no-untyped-def]
    procs: list[subprocess.Popen[str]] = []
    yield procs.append
    for proc in procs:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_authsvc_serve(env: dict[str, str], stop) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    exe = Path(sys.executable).with_name("authsvc")
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop(proc)
    status, body = wait_for(f"http://127.0.0.1:{port}/healthz", proc)
    assert status == 200
    assert b'"status":"ok"' in body.replace(b" ", b"")


def test_gunicorn_serves_the_wsgi_app(env: dict[str, str], stop) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "authsvc.wsgi:app",
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop(proc)
    status, _ = wait_for(f"http://127.0.0.1:{port}/healthz", proc)
    assert status == 200


def test_serve_refuses_an_outdated_schema(env: dict[str, str], db) -> None:  # type: ignore[no-untyped-def]
    from authsvc import migrate

    migrate.downgrade(db.engine, "base")
    result = run_authsvc("serve", "--port", str(free_port()), env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the database schema is not up to date: run `authsvc db upgrade`"
    )


def test_invalid_setting_stops_the_start_with_one_line(env: dict[str, str]) -> None:
    result = run_authsvc("serve", env={**env, "AUTHSVC_SESSION_MAX_AGE": "soon"})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: AUTHSVC_SESSION_MAX_AGE: expected a whole number of seconds, got 'soon'"
    ]


def test_gunicorn_stops_on_an_invalid_setting(env: dict[str, str]) -> None:
    """gunicorn itself stops (not a loop of workers failing to boot), with our one line."""
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "--bind",
            f"127.0.0.1:{free_port()}",
            "--workers",
            "2",
            "authsvc.wsgi:app",
        ],
        env={**os.environ, **env, "AUTHSVC_ISSUER": "http://example.org"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert (
        "error: AUTHSVC_ISSUER: the issuer must use https (http is allowed only on loopback)"
        in (result.stderr)
    )
    assert (
        result.stderr.count("error: AUTHSVC_ISSUER") <= 2
    )  # one per worker that tried, not a loop


def test_serve_on_a_busy_port(env: dict[str, str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_authsvc("serve", "--port", str(port), env=env)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")


@pytest.mark.parametrize("args", [[], ["letters"], ["db"], ["audit"], ["directory"]])
def test_a_missing_subcommand_ends_with_an_error_line(env: dict[str, str], args: list[str]) -> None:
    result = run_authsvc(*args, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_commands_before_db_upgrade_say_so_and_create_nothing(tmp_path: Path) -> None:
    instance = tmp_path / "nowhere"
    env = {"AUTHSVC_INSTANCE_DIR": str(instance), "AUTHSVC_SECRET_KEY": "k" * 40}
    result = run_authsvc("audit", "verify", env=env)
    assert result.returncode == 1
    assert "there is no database at" in result.stderr
    assert "authsvc db upgrade" in result.stderr.strip().splitlines()[-1]
    assert not (instance / "authsvc.sqlite3").exists()
    up = run_authsvc("db", "upgrade", env=env)
    assert up.returncode == 0, up.stderr
    assert oct((instance / "authsvc.sqlite3").stat().st_mode & 0o777) == "0o600"
    assert oct(instance.stat().st_mode & 0o777) == "0o700"


def test_demo_is_idempotent(env: dict[str, str]) -> None:
    first = run_authsvc("demo", env=env)
    assert first.returncode == 0, first.stderr
    assert "activation code:" in first.stdout
    second = run_authsvc("demo", env=env)
    assert second.returncode == 0
    assert "matricule:" in second.stdout
