"""Browser tests: the real provider (``authsvc serve``), the real card agent, a real SMTP server,
and Debian's Chromium driven by Playwright (headless). Skipped with a clear message when Chromium
or Playwright is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..mailserver import free_port

CHROMIUM = os.environ.get("AUTHSVC_TEST_CHROMIUM", "/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def tail(path: Path, limit: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return text[-limit:]


def wait_http(
    url: str, proc: subprocess.Popen[Any], timeout: float = 30, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = tail(log) if log is not None else ""
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {err}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers: that is all we wait for
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class Processes:
    """The servers a test starts. Each one's stderr goes to a file in the test's temporary folder
    (a pipe nobody reads would fill up and hang the server); its end is shown if the test fails."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[Any]] = []
        self.logs: list[Path] = []

    def start(self, args: list[str], env: dict[str, str], ready_url: str) -> subprocess.Popen[Any]:
        name = Path(args[1] if len(args) > 1 else args[0]).name
        log = self.folder / f"{len(self.procs) + 1}-{name}.stderr"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                args, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=err
            )
        self.procs.append(proc)
        self.logs.append(log)
        wait_http(ready_url, proc, log=log)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def report(self) -> str:
        return "\n".join(
            f"--- {proc.args!r} (stderr: {log}) ---\n{tail(log)}"
            for proc, log in zip(self.procs, self.logs, strict=True)
        )


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop()
    if request.node.stash.get(CALL_FAILED, False):
        sys.stderr.write("\nthe servers' stderr, last lines:\n" + procs.report() + "\n")


def authsvc_exe() -> str:
    return str(Path(sys.executable).with_name("authsvc"))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Any, str], None]:
    """``screenshot(page, "activation-1-start")``: into docs/screenshots/ when
    ``AUTHSVC_UPDATE_SCREENSHOTS=1`` (to refresh the docs), else into the test's temporary folder
    (a test run must not change tracked files)."""
    folder = DOCS if os.environ.get("AUTHSVC_UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> None:
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    return take


@pytest.fixture
def provider(
    env: dict[str, str],
    processes: Processes,
    smtp_server: Any,
    test_ca: Any,
    revocation_server: Any,
) -> dict[str, Any]:
    """``authsvc serve`` on a free port, mailing through the test's SMTP server, trusting the test CA."""
    port, agent_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port}"
    server_env = {
        **env,
        "AUTHSVC_ISSUER": issuer,
        "AUTHSVC_SMTP_HOST": "127.0.0.1",
        "AUTHSVC_SMTP_PORT": str(smtp_server.port),
        "AUTHSVC_CARD_TRUST_ANCHORS": str(test_ca.trust_anchors),
        "AUTHSVC_CARD_AGENT_URL": f"http://127.0.0.1:{agent_port}",
    }
    shutil.rmtree(Path(env["AUTHSVC_INSTANCE_DIR"]) / "mail", ignore_errors=True)
    processes.start([authsvc_exe(), "serve", "--port", str(port)], server_env, f"{issuer}/healthz")
    return {"issuer": issuer, "env": server_env, "agent_port": agent_port}


@pytest.fixture
def card_agent(provider: dict[str, Any], processes: Processes, softhsm: Any) -> str:
    """The card agent, trusting the provider's origin, seeing the test session's SoftHSM2 tokens."""
    port = provider["agent_port"]
    url = f"http://127.0.0.1:{port}"
    processes.start(
        [authsvc_exe(), "card-agent", "--port", str(port), "--trust-origin", provider["issuer"]],
        {**provider["env"], **softhsm.env()},
        f"{url}/v1/status",
    )
    return url
