"""The wheel carries the card agent's PIN page and its static files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_has_the_agents_templates_and_static_files(tmp_path: Path, db_kind: str) -> None:
    if db_kind != "sqlite":
        pytest.skip("packaging does not depend on the database: checked in the SQLite run")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("authsvc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "authsvc/cardagent/templates/pin.html",
        "authsvc/cardagent/static/pin.js",
        "authsvc/cardagent/static/agent.css",
    ):
        assert name in names
