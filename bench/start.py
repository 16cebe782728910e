"""Benchmark: seconds from launching authsvc until discovery answers.

Not a test. For each server, ``--repeat`` times, on a fresh instance (a new instance folder and
secret, the database made by ``authsvc db upgrade``, untimed), it starts the server and polls
``GET /.well-known/openid-configuration`` every 5 ms until it answers 200; the time counted is from
just before the process is launched until that answer. The servers:

- ``authsvc serve`` (the development server, threaded);
- a production server with 2 workers (``--server``): ``granian --interface wsgi --factory
  'authsvc.wsgi:worker_app' --workers 2`` (the default, as docs/deployment.md recommends), or
  ``gunicorn -c gunicorn.conf.py 'authsvc.wsgi:app' --workers 2``.

It also times, once per repeat, what a start is made of: the interpreter alone (``python -c
pass``), and in a fresh interpreter ``import authsvc``, ``create_app()`` and the first discovery
request through Flask's test client, each timed inside that process. Every process is stopped
(its whole process group) and the instance folders removed.

The target of PERFORMANCE.md: ``authsvc serve`` until discovery answers ≤ 2 s (best of the runs).

    .venv/bin/python bench/start.py [--repeat 3] [--db sqlite|postgresql]
        [--server granian|gunicorn] [--results bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.oidc_vs_peer import Processes, database, server_argv
from bench.report import emit

BIN = Path(sys.executable).parent
TARGET = 2.0
DISCOVERY = "/.well-known/openid-configuration"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def instance_env(folder: Path, url: str, port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "AUTHSVC_INSTANCE_DIR": str(folder / "instance"),
        "AUTHSVC_SECRET_KEY": secrets.token_urlsafe(48),
        "AUTHSVC_DATABASE_URL": url,
        "AUTHSVC_ISSUER": f"http://127.0.0.1:{port}",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("AUTHSVC_ENV_FILE", None)
    env.pop("GUNICORN_CMD_ARGS", None)
    return env


def time_to_discovery(argv: list[str], env: dict[str, str], port: int, log: Path) -> float:
    """Seconds from launching ``argv`` until discovery answers 200 on ``port``."""
    url = f"http://127.0.0.1:{port}{DISCOVERY}"
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=out, stderr=out, start_new_session=True
        )
        try:
            while time.perf_counter() - start < 60:
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace").strip().splitlines()[-10:]
                    raise RuntimeError(f"{argv[0]} exited ({proc.returncode}): " + "\n".join(tail))
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            json.loads(response.read())
                            return time.perf_counter() - start
                except OSError:
                    time.sleep(0.005)
            raise RuntimeError(f"{argv[0]}: no answer within 60 s")
        finally:
            Processes().stop(proc)  # the process and its group (the server's workers)


def run_once(argv: list[str], env: dict[str, str], timeout: float = 60) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True, timeout=timeout)
    return time.perf_counter() - start


BREAKDOWN = f"""
import json, time
t0 = time.perf_counter()
import authsvc
t1 = time.perf_counter()
app = authsvc.create_app()
t2 = time.perf_counter()
status = app.test_client().get({DISCOVERY!r}).status_code
t3 = time.perf_counter()
assert status == 200, status
times = {{"import authsvc": t1 - t0, "create_app()": t2 - t1, "first discovery": t3 - t2}}
print(json.dumps(times))
"""


def breakdown(python: str, env: dict[str, str]) -> dict[str, float]:
    """In a fresh interpreter: ``import authsvc``, ``create_app()``, the first discovery request
    (Flask's test client), each timed inside the process."""
    out = subprocess.run(
        [python, "-c", BREAKDOWN], env=env, cwd=ROOT, check=True, capture_output=True, timeout=60
    )
    return {k: float(v) for k, v in json.loads(out.stdout.splitlines()[-1]).items()}


def production_argv(server: str, port: int) -> list[str]:
    """The production server, 2 workers of 4 threads, as docs/deployment.md runs it."""
    return server_argv(server, port, 2, 4)


def one_round(kind: str, tmp: Path, i: int, production: str) -> dict[str, float]:
    times: dict[str, float] = {}
    python = str(BIN / "python")
    for server in ("authsvc serve", f"{production}, 2 workers"):
        folder = tmp / f"{i}-{server.split()[0].strip(',')}"
        folder.mkdir()
        with database(kind, folder) as url:
            port = free_port()
            env = instance_env(folder, url, port)
            upgrade = subprocess.run(
                [str(BIN / "authsvc"), "db", "upgrade"], env=env, capture_output=True, text=True
            )
            if upgrade.returncode != 0:
                raise RuntimeError(f"authsvc db upgrade: {upgrade.stderr.strip()}")
            if server == "authsvc serve":
                times["python -c pass"] = run_once([python, "-c", "pass"], env)
                times |= breakdown(python, env)
                argv = [str(BIN / "authsvc"), "serve", "--port", str(port)]
            else:
                argv = production_argv(production, port)
            times[server] = time_to_discovery(argv, env, port, folder / "server.log")
        shutil.rmtree(folder, ignore_errors=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="starts of each (the best counts)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--server",
        choices=["granian", "gunicorn"],
        default="granian",
        help="the production server timed after `authsvc serve` (2 workers)",
    )
    parser.add_argument(
        "--results", type=Path, default=None, help="also write the JSON line to a file there"
    )
    args = parser.parse_args()
    report: dict[str, Any] = {
        "bench": "start",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "db": args.db,
        "server": args.server,
        "repeat": args.repeat,
        "load_before": load(),
    }
    rounds: list[dict[str, float]] = []
    tmp = Path(tempfile.mkdtemp(prefix="authsvc-bench-start-"))
    try:
        for i in range(args.repeat):
            rounds.append(one_round(args.db, tmp, i, args.server))
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["load_after"] = load()
    print(
        f"\nstart until discovery answers, {args.db}, best and median of {args.repeat}, "
        f"load {report['load_before']} -> {report['load_after']}"
    )
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        best, median = min(values), statistics.median(values)
        report[name] = {"best s": round(best, 3), "median s": round(median, 3)}
        mark = ""
        if name in ("authsvc serve", f"{args.server}, 2 workers"):
            ratio = best / TARGET
            report[name]["ratio to 2 s"] = round(ratio, 3)
            mark = f"   ÷ {TARGET:.0f} s = {ratio:.2f} ({'met' if ratio <= 1 else 'NOT met'})"
        print(f"  {name:<22} best {best:6.3f} s   median {median:6.3f} s{mark}")
    print(f"  target (PERFORMANCE.md): authsvc serve until discovery answers ≤ {TARGET:.0f} s\n")
    emit(report, "start", args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
