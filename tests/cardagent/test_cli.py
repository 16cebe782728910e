"""`authsvc card-agent` failures: one `error: …` line on stderr, no traceback (INTERFACE §2)."""

from __future__ import annotations

import socket
from pathlib import Path

from softhsm.testca import SoftHSM

from ..conftest import run_authsvc
from .conftest import clean_environ, free_port


def _last_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else ""


def test_port_in_use(cards: SoftHSM, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_authsvc(
            "card-agent", "--port", str(port), env=clean_environ(**cards.env()), cwd=tmp_path
        )
    assert result.returncode == 1
    assert _last_line(result.stderr) == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in result.stderr


def test_pkcs11_module_missing(tmp_path: Path) -> None:
    missing = tmp_path / "libnothere.so"
    result = run_authsvc(
        "card-agent",
        "--port",
        str(free_port()),
        env=clean_environ(AUTHSVC_PKCS11_MODULE=str(missing)),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: AUTHSVC_PKCS11_MODULE: {missing} does not exist"
    ]


def test_pkcs11_module_that_does_not_load(tmp_path: Path) -> None:
    broken = tmp_path / "libbroken.so"
    broken.write_text("not a shared object")
    result = run_authsvc(
        "card-agent",
        "--port",
        str(free_port()),
        env=clean_environ(AUTHSVC_PKCS11_MODULE=str(broken)),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert _last_line(result.stderr).startswith(
        f"error: AUTHSVC_PKCS11_MODULE: cannot load the PKCS#11 module {broken}"
    )
    assert "Traceback" not in result.stderr


def test_bad_trusted_origin(tmp_path: Path) -> None:
    result = run_authsvc(
        "card-agent",
        "--trust-origin",
        "http://evil.example",
        env=clean_environ(),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --trust-origin: an origin must use https (http is allowed only on loopback)"
    ]


def test_help_names_the_options() -> None:
    result = run_authsvc("card-agent", "--help", env=clean_environ())
    assert result.returncode == 0
    assert "--port" in result.stdout
    assert "--trust-origin" in result.stdout
