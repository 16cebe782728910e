"""Fixtures for the card agent: a token store of each test's own, and the agent as a subprocess.

Each test gets an empty SoftHSM2 token store (``cards``), so that "no card" means no card and
the status lists exactly the cards the test made; ``issue(...)`` puts a new card in it.
``start_agent(...)`` runs ``authsvc card-agent`` in a subprocess that sees that store (its
``SOFTHSM2_CONF``), on a free port, and stops it at the end of the test.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from softhsm.testca import Card, SoftHSM, TestCA

TRUSTED = "http://127.0.0.1:5000"  # the default issuer's origin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_nonce() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def clean_environ(**extra: str) -> dict[str, str]:
    """The test process's environment without any AUTHSVC_* setting of the developer's shell."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AUTHSVC_") or k.startswith("AUTHSVC_TEST_")
    }
    env.pop("SOFTHSM2_CONF", None)
    env.update(extra)
    return env


# --- the token store and its cards ---------------------------------------------------------------


@pytest.fixture
def cards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHSM:
    """An empty SoftHSM2 token store of this test (also what in-process PKCS#11 sees)."""
    try:
        store = SoftHSM(tmp_path / "cards")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("SOFTHSM2_CONF", str(store.conf))
    return store


@pytest.fixture
def issue(cards: SoftHSM, test_ca: TestCA) -> Callable[..., Card]:
    """``issue(key_type="rsa", user_pin="123456", …)``: a new card in this test's store."""

    def make(**options: Any) -> Card:
        options.setdefault("given_name", "Marie")
        options.setdefault("family_name", "Dupont")
        options.setdefault("user_pin", "123456")
        return test_ca.issue_card(cards, **options)

    return make


# --- talking to the agent over HTTP --------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class PinPage:
    """What a person sees on the PIN page (parsed from its HTML)."""

    reply: Reply
    state: str
    messages: list[str]
    csrf_token: str | None
    card_ids: list[str]
    disabled_card_ids: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, reply: Reply) -> PinPage:
        html = reply.text
        state = re.search(r'<body data-state="([^"]*)"', html)
        csrf = re.search(r'name="csrf_token" value="([^"]*)"', html)
        card_inputs = re.findall(r'<input type="(?:radio|hidden)" name="card" value="[^>]*>', html)
        ids = [re.search(r'value="([^"]*)"', tag).group(1) for tag in card_inputs]  # type: ignore[union-attr]
        disabled = [
            re.search(r'value="([^"]*)"', tag).group(1)  # type: ignore[union-attr]
            for tag in card_inputs
            if " disabled" in tag
        ]
        return cls(
            reply=reply,
            state=state.group(1) if state else "",
            messages=re.findall(r'data-message="([^"]*)"', html),
            csrf_token=csrf.group(1) if csrf else None,
            card_ids=ids,
            disabled_card_ids=disabled,
        )

    @property
    def has_pin_field(self) -> bool:
        return 'name="pin"' in self.reply.text

    @property
    def closes_itself(self) -> bool:
        return 'data-close="1"' in self.reply.text


class AgentClient:
    """HTTP to an agent on 127.0.0.1:<port>, as a browser page or the PIN page would send it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def request(
        self,
        method: str,
        path: str,
        *,
        origin: str | None = TRUSTED,
        json_body: Any = None,
        body: bytes | None = None,
        form: dict[str, str] | None = None,
        host: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if path.startswith("http"):
            path = urlsplit(path).path
        send = {"Host": host or f"127.0.0.1:{self.port}"}
        if origin is not None:
            send["Origin"] = origin
        if json_body is not None:
            body = json.dumps(json_body).encode()
            send["Content-Type"] = "application/json"
        if form is not None:
            body = urlencode(form).encode()
            send["Content-Type"] = "application/x-www-form-urlencoded"
        send.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in send.items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    # -- the protocol, step by step --

    def status(self, origin: str | None = TRUSTED) -> Reply:
        return self.request("GET", "/v1/status", origin=origin)

    def start(self, nonce: str, origin: str | None = TRUSTED) -> Reply:
        return self.request("POST", "/v1/authenticate", origin=origin, json_body={"nonce": nonce})

    def result(self, request_id: str, origin: str | None = TRUSTED) -> Reply:
        return self.request("GET", f"/v1/authenticate/{request_id}", origin=origin)

    def pin_page(self, request_id: str, **kwargs: Any) -> PinPage:
        return PinPage.parse(self.request("GET", f"/pin/{request_id}", origin=None, **kwargs))

    def submit(
        self,
        request_id: str,
        page: PinPage,
        *,
        pin: str = "",
        card: str | None = None,
        action: str = "sign",
        origin: str | None = "own",
        fetch_site: str | None = "same-origin",
        headers: dict[str, str] | None = None,
    ) -> PinPage:
        """Post the PIN page's form back, as the browser does (Origin: the agent's own,
        ``Sec-Fetch-Site: same-origin``); ``origin=None, fetch_site=None`` is an older browser
        that sends neither header."""
        form = {"csrf_token": page.csrf_token or "", "action": action, "pin": pin}
        chosen = card if card is not None else (page.card_ids[0] if page.card_ids else "")
        form["card"] = chosen
        sent = {"Sec-Fetch-Site": fetch_site} if fetch_site is not None else {}
        return PinPage.parse(
            self.request(
                "POST",
                f"/pin/{request_id}",
                origin=self.base if origin == "own" else origin,
                form=form,
                headers={**sent, **(headers or {})},
            )
        )

    def sign_in(self, nonce: str, pin: str, origin: str = TRUSTED, card: str | None = None) -> Any:
        """The whole flow: start, open the PIN page, type the PIN, collect the token."""
        started = self.start(nonce, origin)
        assert started.status == 202, started.body
        request_id = started.json["request_id"]
        page = self.pin_page(request_id)
        done = self.submit(request_id, page, pin=pin, card=card)
        assert done.state == "done", done.messages
        result = self.result(request_id, origin)
        assert result.status == 200
        assert result.json["status"] == "done"
        return result.json["auth_token"]


class RunningAgent(AgentClient):
    def __init__(self, port: int, proc: subprocess.Popen[str]) -> None:
        super().__init__(port)
        self.proc = proc


def authsvc_exe() -> str:
    return str(Path(sys.executable).with_name("authsvc"))


@pytest.fixture
def start_agent(cards: SoftHSM, tmp_path: Path) -> Iterator[Callable[..., RunningAgent]]:
    """``start_agent("--trust-origin", "https://…", env={…})``: the agent in a subprocess."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> RunningAgent:
        port = free_port()
        proc = subprocess.Popen(
            [authsvc_exe(), "card-agent", "--port", str(port), *args],
            env=clean_environ(**cards.env(), **(env or {})),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        agent = RunningAgent(port, proc)
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"the card agent exited with {proc.returncode}: {err[-2000:]}")
            try:
                if agent.status(origin=None).status == 200:
                    return agent
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the card agent did not answer within 20 s")
            time.sleep(0.1)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture
def agent(start_agent: Callable[..., RunningAgent]) -> RunningAgent:
    """The agent with its defaults: trusts the default issuer's origin (http://127.0.0.1:5000)."""
    return start_agent()
