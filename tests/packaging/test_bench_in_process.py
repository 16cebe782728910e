"""bench/in_process.py still runs against today's authsvc (a benchmark that broke would only be
found when someone needs its figures): a few requests of each kind, every answer checked by the
benchmark itself. No timing is asserted: the figures are for docs/performance.md, not for tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

KINDS = {
    "empty view, bare Flask",
    "empty view, authsvc's web layer",
    "discovery (before Flask)",
    "token, client_credentials",
    "token, code exchange",
    "introspection",
    "userinfo",
    "unit of work: ORM session, SELECT 1",
    "unit of work: Core connection, SELECT 1",
    "statement: SELECT 1 on an open connection",
}


@pytest.mark.slow
def test_in_process_bench_runs_and_checks_every_answer(db_kind: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "in_process.py"),
            "--requests",
            "10",
            "--chunks",
            "1",
            "--threads",
            "2",
            "--db",
            db_kind,
            "--results",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [written] = tmp_path.glob("in-process-*.json")
    report = json.loads(written.read_text())
    assert report["db"] == db_kind
    assert set(report["results"]) == KINDS
    for figures in report["results"].values():
        assert figures["cpu_us"] > 0 and figures["cpu_us_2_threads"] > 0


def test_in_process_bench_refuses_an_unknown_kind() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "in_process.py"), "--only", "tokens"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("error: --only: unknown tokens")
