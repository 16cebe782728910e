"""`pip install .` into a fresh virtualenv gives a working `authsvc`, migrations included."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_virtualenv(tmp_path: Path, db_kind: str) -> None:
    if db_kind != "sqlite":
        pytest.skip("packaging does not depend on the database: checked in the SQLite run")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("authsvc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "authsvc/migrations/env.py" in names
    assert "authsvc/migrations/script.py.mako" in names
    assert any(n.startswith("authsvc/migrations/versions/0001_") for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = env_dir / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", str(wheel)], check=True, capture_output=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "AUTHSVC_INSTANCE_DIR": str(elsewhere / "instance")}
    authsvc = str(env_dir / "bin" / "authsvc")
    up = subprocess.run(
        [authsvc, "db", "upgrade"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stderr
    assert (elsewhere / "instance" / "authsvc.sqlite3").exists()
    verify = subprocess.run(
        [authsvc, "audit", "verify", "--json"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    assert '"ok": true' in verify.stdout
