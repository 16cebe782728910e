"""bench/targets.py reads the newest report of each benchmark and says, per target of
PERFORMANCE.md, what was measured and whether it is met; these tests give it reports made up
for the purpose (it measures nothing itself)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def oidc(db: str, token: float) -> dict:
    return {
        "revision": "abc1234",
        "db": db,
        "workers": 2,
        "ratio token": token,
        "ratio code exchange": 0.75,
        "ratio introspection": 1.1,
        "ratio userinfo": 1.2,
        "ratio discovery": 4.0,
        "ratio JWKS": 3.0,
        "caching": {
            f"authsvc {what}": {"cache-control": "public, max-age=300", "etag": '"x"'}
            for what in ("discovery", "JWKS")
        },
        "requests": {"authsvc userinfo": [150_000, 150_000], "peer userinfo": [10**6]},
        "worker rss MB": {
            "start": [90.0, 91.0],
            "rounds": [[100.0, 101.0], [100.5, 101.0]],
            "end": [100.5, 101.5],
            "same workers": True,
        },
    }


REPORTS = {
    "oidc-vs-peer-sqlite-20260101T000000Z": oidc("sqlite", 0.2),
    # a newer run of the same database: only this one counts
    "oidc-vs-peer-sqlite-20260102T000000Z": oidc("sqlite", 1.3),
    "oidc-vs-peer-postgresql-20260102T000000Z": oidc("postgresql", 1.1),
    "signin-20260102T000000Z": {
        "revision": "abc1234",
        "threads": 2,
        "ratio sqlite": 0.91,
        "ratio postgresql": 0.8,
        "argon2 2 threads": 90.0,
        "limit": 100.0,
    },
    "scale-20260102T000000Z": {
        "revision": "abc1234",
        "ratio sign-in p99": 1.0,
        "ratio code exchange p99": 1.1,
    },
}


def run(results: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "targets.py"), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def rows(stdout: str) -> dict[str, list[str]]:
    table = [line for line in stdout.splitlines() if line.startswith("| ") and "---" not in line]
    return {
        cells[0]: cells[1:]
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[1:])
    }


def test_each_target_from_the_newest_report_of_its_benchmark(tmp_path: Path) -> None:
    for name, report in REPORTS.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(report) + "\n")
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    table = rows(done.stdout)
    token = table["token endpoint ÷ peer ≥ 1.0"]
    assert token[:2] == ["1.30 (sqlite), 1.10 (postgresql)", "met"]
    assert "20260102T000000Z" in token[2] and "20260101" not in token[2]
    assert table["discovery, JWKS ÷ peer ≥ 1.0, with Cache-Control and ETag"][1] == "met"
    sign_in = table["password sign-in ÷ (cores × Argon2id/s) ≥ 0.9"]
    assert sign_in[0].startswith("0.91 (sqlite), 0.80 (postgresql)")
    assert sign_in[1] == "**not met**"
    assert table["p99 with 1,000,000 accounts ÷ with 10,000 ≤ 1.2"][1] == "met"
    memory = table["memory per worker after 100,000 requests ≤ 120 MB, flat"]
    assert memory[0].startswith("101.5 MB (sqlite) after ~150,000 requests a worker, +0.5 MB")
    assert memory[1] == "met"
    smartcard = table["smartcard sign-in ÷ harmonic(chain, signature) ≥ 0.7"]
    assert smartcard[:2] == ["not measured (run `bench/smartcard_verify.py`)", "—"]
    assert "Revision measured: abc1234." in done.stdout


def test_missing_cache_headers_fail_the_discovery_target(tmp_path: Path) -> None:
    report = oidc("sqlite", 1.0)
    report["caching"]["authsvc JWKS"]["etag"] = None
    (tmp_path / "oidc-vs-peer-sqlite-20260101T000000Z.json").write_text(json.dumps(report))
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    discovery = rows(done.stdout)["discovery, JWKS ÷ peer ≥ 1.0, with Cache-Control and ETag"]
    assert discovery[0].endswith("headers: **missing**")
    assert discovery[1] == "**not met** (postgresql: not measured)"


def test_reports_of_different_revisions_are_named(tmp_path: Path) -> None:
    (tmp_path / "oidc-vs-peer-sqlite-20260101T000000Z.json").write_text(
        json.dumps(oidc("sqlite", 1.0))
    )
    other = {**REPORTS["scale-20260102T000000Z"], "revision": "def5678"}
    (tmp_path / "scale-20260101T000000Z.json").write_text(json.dumps(other))
    done = run(tmp_path)
    assert "these reports measured different revisions: abc1234, def5678" in done.stdout


def test_a_broken_report_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "signin-20260101T000000Z.json").write_text("{not json\n")
    done = run(tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: signin-20260101T000000Z.json: not a benchmark")
    assert len(done.stderr.strip().splitlines()) == 1
    (tmp_path / "signin-20260101T000000Z.json").write_text(json.dumps({"revision": "x"}))
    done = run(tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: signin-20260101T000000Z.json: no 'threads'"


def test_no_results_folder(tmp_path: Path) -> None:
    done = run(tmp_path / "absent")
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: no results folder {tmp_path / 'absent'}"


def test_a_worker_over_120_mb_fails_the_memory_target(tmp_path: Path) -> None:
    report = oidc("sqlite", 1.0)
    report["worker rss MB"]["end"] = [100.5, 121.0]
    (tmp_path / "oidc-vs-peer-sqlite-20260101T000000Z.json").write_text(json.dumps(report))
    done = run(tmp_path)
    memory = rows(done.stdout)["memory per worker after 100,000 requests ≤ 120 MB, flat"]
    assert memory[0].startswith("121.0 MB (sqlite)") and memory[1].startswith("**not met**")


def test_a_worker_that_keeps_growing_is_not_flat(tmp_path: Path) -> None:
    report = oidc("sqlite", 1.0)
    # under 120 MB, but 4 MB more after the first round: growth that would not stop
    report["worker rss MB"]["rounds"] = [[100.0, 101.0], [102.0, 103.0], [104.0, 105.0]]
    report["worker rss MB"]["end"] = [104.0, 105.0]
    (tmp_path / "oidc-vs-peer-sqlite-20260101T000000Z.json").write_text(json.dumps(report))
    done = run(tmp_path)
    memory = rows(done.stdout)["memory per worker after 100,000 requests ≤ 120 MB, flat"]
    assert (
        memory[0].startswith("105.0 MB (sqlite)") and "+4.0 MB after the first round" in memory[0]
    )
    assert memory[1].startswith("**not met**")


def test_a_database_left_out_is_named(tmp_path: Path) -> None:
    """A benchmark run with --db sqlite (or one that skipped PostgreSQL) writes no PostgreSQL
    figures: the target is shown for what was measured, never as met for both."""
    (tmp_path / "oidc-vs-peer-sqlite-20260101T000000Z.json").write_text(
        json.dumps(oidc("sqlite", 1.2))
    )
    signin = {
        "revision": "abc1234",
        "threads": 4,
        "ratio sqlite": 0.95,
        "argon2 4 threads": 180.0,
        "limit": 200.0,
    }
    (tmp_path / "signin-20260101T000000Z.json").write_text(json.dumps(signin))
    smartcard = {"revision": "abc1234", "ratio token": 0.9, "ratio flow (sqlite, 16 threads)": 0.75}
    (tmp_path / "smartcard-20260101T000000Z.json").write_text(json.dumps(smartcard))
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    table = rows(done.stdout)
    assert table["token endpoint ÷ peer ≥ 1.0"][:2] == [
        "1.20 (sqlite)",
        "met (postgresql: not measured)",
    ]
    sign_in = table["password sign-in ÷ (cores × Argon2id/s) ≥ 0.9"]
    assert sign_in[0] == "0.95 (sqlite); Argon2id alone from 4 threads: 0.90 of the limit"
    assert sign_in[1] == "met (postgresql: not measured)"
    card = table["smartcard sign-in ÷ harmonic(chain, signature) ≥ 0.7"]
    assert card[0].startswith("0.75 (sqlite), the challenge consumed; 0.90 for the token alone")
    assert card[1] == "met (postgresql: not measured)"
