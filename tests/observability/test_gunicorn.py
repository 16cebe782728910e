"""gunicorn with several workers: ``/metrics`` adds up every worker's counters, those of workers
that exited included (prometheus_client's multiprocess mode), and with the ``gunicorn.conf.py``
hooks of docs/operations.md a run starts from zero."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..functional.test_serving import free_port, wait_for
from .conftest import key, samples

ROOT = Path(__file__).resolve().parents[2]
# not /healthz: a start-up probe that timed out on our side may still be counted later
DISCOVERY = "/.well-known/openid-configuration"
COUNTED = key("authsvc_http_requests_total", endpoint=DISCOVERY, method="GET", status="2xx")
REQUESTS = 6
STALE = 1000
STALE_RUN = f"""
from authsvc import metrics
for _ in range({STALE}):
    metrics.http_request("{DISCOVERY}", "GET", 200, 0.01)
"""


def documented_gunicorn_conf() -> str:
    """The ``gunicorn.conf.py`` lines of docs/operations.md, as an operator would copy them."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    (conf,) = [b for b in blocks if b.startswith("# gunicorn.conf.py")]
    return conf


def scrape(port: int, headers: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return samples(response.read().decode())


def get(port: int, path: str) -> int | str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return f"{exc.code} {exc.read()[:300]!r}"


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_metrics_add_up_the_workers_and_start_from_zero(
    env: dict[str, str], tmp_path: Path, processes: list[subprocess.Popen[str]], db_kind: str
) -> None:
    if db_kind != "sqlite":
        pytest.skip("adding up the workers does not depend on the database: checked on SQLite")
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(documented_gunicorn_conf(), encoding="utf-8")
    folder = tmp_path / "metrics"
    environment = {
        **os.environ,
        **env,
        "AUTHSVC_METRICS": "on",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    # what an earlier run left behind: 1000 requests that this run must not count
    folder.mkdir()
    subprocess.run(
        [sys.executable, "-c", STALE_RUN], env=environment, check=True, capture_output=True
    )
    assert list(folder.glob("counter_*.db"))

    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            *("--config", str(conf), "--bind", f"127.0.0.1:{port}", "--workers", "2"),
            "authsvc.wsgi:app",
        ],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.append(proc)
    wait_for(f"http://127.0.0.1:{port}/healthz", proc, timeout=60)
    before = scrape(port).get(COUNTED, 0.0)
    assert before < STALE  # the on_starting hook emptied the folder: this run starts from zero
    # one worker is kept busy by a request that is not finished: the other answers meanwhile
    with socket.create_connection(("127.0.0.1", port), timeout=30) as held:
        held.sendall(f"GET {DISCOVERY} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        time.sleep(0.5)  # accepted by one worker, which now waits for the rest
        statuses = [get(port, DISCOVERY) for _ in range(REQUESTS - 1)]
        held.sendall(b"Connection: close\r\n\r\n")
        assert held.makefile("rb").readline().startswith(b"HTTP/1.1 200")
    assert statuses == [200] * (REQUESTS - 1)
    after = scrape(port)
    assert after[COUNTED] - before == REQUESTS  # whichever worker answered each request
    assert after[("authsvc_database_up", ())] == 1
    workers = [int(f.stem.split("_")[1]) for f in folder.glob("counter_*.db")]
    assert len(workers) >= 2

    # a worker that exits (gunicorn starts another): what it counted is still counted
    os.kill(workers[0], signal.SIGTERM)
    deadline = time.monotonic() + 30
    while pid_alive(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scrape(port)[COUNTED] >= after[COUNTED]

    # through the proxy: not there
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(port, {"X-Forwarded-For": "203.0.113.7"})
    assert refused.value.code == 404
    refused.value.close()
