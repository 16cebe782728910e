"""Interoperability: a strict third-party OpenID Connect client drives the real provider.

The provider is ``authsvc serve`` in a subprocess (127.0.0.1, a free port, the suite's database,
the test CA's trust anchors, card revocation checked against the session's CRL server). Relying
services are registered with ``authsvc clients create --json``. The relying party's side of every
flow is done by the Node package ``openid-client`` (v6, strict by default), run by ``js/driver.mjs``
as a child process that answers one JSON command per line; the person's side (the browser, the
password, the smartcard) is played here over plain HTTP.

``make test`` installs the driver's packages (``npm ci --prefix tests/interop/js``); run directly,
the tests install them the same way when they are missing. Without ``node`` they are skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.cookiejar
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey, OKPKey, RSAKey

from authsvc.app import Services
from authsvc.config import load_settings
from authsvc.directory.importer import import_directory
from authsvc.security.passwords import CHEAP
from softhsm.testca import Card, SoftHSM

from ..card_signing import sign_challenge
from ..conftest import run_authsvc
from ..mailserver import free_port
from ..oidc.conftest import ANNE, PASSWORD, Person, activate

JS_DIR = Path(__file__).resolve().parent / "js"
DRIVER = JS_DIR / "driver.mjs"
LOCK = JS_DIR / "package-lock.json"
#: written after a successful ``npm ci`` (by ``make test`` or by these tests): inside
#: node_modules, so that it goes when node_modules goes
STAMP = JS_DIR / "node_modules" / ".authsvc-npm-ci"
#: held while npm ci runs (outside the tree: nothing to ignore, nothing to commit)
NPM_LOCK = Path(tempfile.gettempdir()) / (
    "authsvc-interop-npm-" + hashlib.sha256(str(JS_DIR).encode()).hexdigest()[:12] + ".lock"
)
DRIVER_TIMEOUT = 60.0

ACR_LOW = "http://eidas.europa.eu/LoA/low"
ACR_HIGH = "http://eidas.europa.eu/LoA/high"
SCOPE = "openid profile email professional"


# --- the Node side -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with the driver's packages installed (``npm ci``, as ``make
    test`` does, when node_modules is missing or older than the lock)."""
    exe = shutil.which("node")
    if exe is None:
        pytest.skip(
            "node is not installed: the openid-client interoperability tests need Node.js 20+ "
            "and npm (Debian: apt-get install nodejs npm; `make test` installs them)"
        )
    version = subprocess.run(
        [exe, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(
            f"node {version} is too old: openid-client v6 needs Node.js 20 or newer (Debian 12's "
            "nodejs package is 18: install Node.js 20 from NodeSource, or use Debian 13)"
        )
    # one install at a time, even when several test runs start together
    with NPM_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stale_modules():
            npm_ci()
    return exe


def stale_modules() -> bool:
    """Whether node_modules is missing or older than package.json or the lock."""
    newest = max(LOCK.stat().st_mtime, (JS_DIR / "package.json").stat().st_mtime)
    return not STAMP.exists() or STAMP.stat().st_mtime < newest


def npm_ci() -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            f"node is installed but npm is not, and {JS_DIR / 'node_modules'} is missing or older "
            "than package-lock.json: install npm, then `npm ci --prefix tests/interop/js`"
        )
    done = subprocess.run(
        [npm, "ci", "--prefix", str(JS_DIR), "--no-audit", "--no-fund"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"npm ci --prefix {JS_DIR} failed:\n{done.stdout}\n{done.stderr}")
    STAMP.touch()


class DriverError(Exception):
    """openid-client refused something: ``.error`` is what it said (name, code, message, and the
    provider's OAuth ``error`` / ``error_description`` / ``status`` when there was one)."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        super().__init__(f"{command}: {json.dumps(error, indent=1)[:3000]}")
        self.error = error


class Driver:
    """``node js/driver.mjs``: the relying services' side, one JSON command per line."""

    def __init__(self, node: str, stderr_path: Path) -> None:
        self.stderr = stderr_path.open("w")
        self.proc = subprocess.Popen(
            [node, str(DRIVER)],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            bufsize=1,
        )
        self.stderr_path = stderr_path
        self.answers: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.next_id = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.answers.put(line)
        self.answers.put(None)

    def _send(self, cmd: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.next_id += 1
        self.proc.stdin.write(json.dumps({"id": self.next_id, "cmd": cmd, **params}) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.answers.get(timeout=DRIVER_TIMEOUT)
        except queue.Empty:
            raise AssertionError(
                f"the driver did not answer {cmd} within {DRIVER_TIMEOUT}s"
            ) from None
        if line is None:
            raise AssertionError(f"the driver exited: {self.stderr_path.read_text()[-3000:]}")
        answer = json.loads(line)
        assert answer["id"] == self.next_id, answer
        return answer  # type: ignore[no-any-return]

    def __call__(self, cmd: str, **params: Any) -> Any:
        """Run a command; a refusal by openid-client raises :class:`DriverError`."""
        answer = self._send(cmd, params)
        if not answer["ok"]:
            raise DriverError(cmd, answer["error"])
        return answer["result"]

    def refused(self, cmd: str, **params: Any) -> dict[str, Any]:
        """Run a command that must fail; what openid-client said."""
        answer = self._send(cmd, params)
        assert not answer["ok"], f"{cmd} was expected to fail: {answer['result']}"
        return answer["error"]  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()


@pytest.fixture
def driver(node: str, tmp_path: Path) -> Iterator[Driver]:
    d = Driver(node, tmp_path / "driver.stderr")
    yield d
    d.close()


# --- the provider --------------------------------------------------------------------------------


def authsvc_exe() -> str:
    return str(Path(sys.executable).with_name("authsvc"))


@dataclass
class Provider:
    """``authsvc serve``, started; :meth:`ready` waits until it answers (relying services are
    registered with the CLI meanwhile: that needs only the database)."""

    issuer: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    _ready: bool = False

    def ready(self, timeout: float = 60) -> None:
        if self._ready:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"authsvc serve exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.issuer}/healthz", timeout=2):
                    break
            except urllib.error.HTTPError as exc:
                exc.close()
                break  # it answers: that is all we wait for
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"authsvc serve did not answer within {timeout}s:\n{self.tail()}")
        self._ready = True

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def provider(
    env: dict[str, str], test_ca: Any, revocation_server: Any, tmp_path: Path
) -> Iterator[Provider]:
    """``authsvc serve`` on a free port of 127.0.0.1, on this test's database, trusting the test
    CA, checking cards against the session's CRL server; its output goes to a file (a pipe that
    nobody reads would fill up and hang it), shown when it fails to start."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    server_env = {
        **env,
        "AUTHSVC_ISSUER": issuer,
        "AUTHSVC_CARD_TRUST_ANCHORS": str(test_ca.trust_anchors),
        "AUTHSVC_CARD_REVOCATION": "crl",
    }
    log = tmp_path / "authsvc-serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [authsvc_exe(), "serve", "--port", str(port)],
            env={**os.environ, **server_env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Provider(issuer, server_env, proc, log)
    try:
        yield server
    finally:
        server.stop()


class BackchannelReceiver:
    """The relying services' back-channel logout endpoints: ``/bc/<name>`` on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[str, str]] = []
        self.arrived = threading.Condition()
        received, arrived = self.received, self.arrived

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                with arrived:
                    received.append((self.path, form.get("logout_token", [""])[0]))
                    arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def uri(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/bc/{name}"

    def wait_for(self, name: str, timeout: float = 30) -> list[str]:
        """The logout tokens the relying service ``name`` received (at least one)."""
        path = f"/bc/{name}"
        with self.arrived:
            self.arrived.wait_for(lambda: any(p == path for p, _ in self.received), timeout)
            tokens = [t for p, t in self.received if p == path]
        assert tokens, f"no back-channel logout reached {name} within {timeout}s"
        return tokens

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backchannel() -> Iterator[BackchannelReceiver]:
    receiver = BackchannelReceiver()
    yield receiver
    receiver.stop()


# --- relying services ----------------------------------------------------------------------------


@dataclass
class Rp:
    """A registered relying service, as the driver knows it (``name``)."""

    name: str
    client_id: str
    client_secret: str | None
    auth: str
    id_token_alg: str
    redirect_uri: str
    post_logout_redirect_uri: str
    private_jwk: dict[str, Any] | None = None

    @property
    def public(self) -> bool:
        return self.auth == "none"


def clients_create(provider: Provider, *args: str) -> dict[str, Any]:
    done = run_authsvc("clients", "create", *args, "--json", env=provider.env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


#: the relying services of the tests: how each is registered and authenticates
KINDS: dict[str, dict[str, Any]] = {
    # confidential, ES256 ID tokens (the default), client_secret_basic (the default)
    "es256": {"auth": "client_secret_basic", "alg": "ES256", "args": []},
    # confidential, RS256 ID tokens, client_secret_post
    "rs256": {
        "auth": "client_secret_post",
        "alg": "RS256",
        "args": ["--id-token-alg", "RS256", "--auth-method", "client_secret_post"],
    },
    # public: no secret, PKCE only
    "public": {"auth": "none", "alg": "ES256", "args": ["--public"]},
    # confidential, with its own pairwise sub
    "pairwise": {
        "auth": "client_secret_basic",
        "alg": "ES256",
        "args": ["--subject-type", "pairwise"],
    },
    # private_key_jwt with a JWK Set made for the test (its assertions signed ES256)
    "private_key_jwt": {"auth": "private_key_jwt", "alg": "ES256", "args": [], "key": "ES256"},
    # the other algorithms discovery advertises for client assertions
    **{
        f"private_key_jwt_{alg}": {
            "auth": "private_key_jwt",
            "alg": "ES256",
            "args": [],
            "key": alg,
        }
        for alg in ("RS256", "PS256", "EdDSA")
    },
}


def client_key(alg: str, kid: str) -> Any:
    """A new key pair of the client for assertions signed with ``alg``."""
    parameters: Any = {"kid": kid, "alg": alg, "use": "sig"}
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=parameters, private=True)
    if alg in ("RS256", "PS256"):
        return RSAKey.generate_key(2048, parameters=parameters, private=True)
    assert alg == "EdDSA", alg
    return OKPKey.generate_key("Ed25519", parameters=parameters, private=True)


@dataclass
class Rps:
    """Registers relying services on the provider and introduces them to the driver."""

    provider: Provider
    driver: Driver
    backchannel: BackchannelReceiver
    tmp_path: Path
    made: dict[str, Rp] = field(default_factory=dict)

    def __call__(self, kind: str) -> Rp:
        if kind in self.made:
            return self.made[kind]
        spec = KINDS[kind]
        redirect_uri = f"http://127.0.0.1:{self.backchannel.port}/rp/{kind}/callback"
        bye = f"http://127.0.0.1:{self.backchannel.port}/rp/{kind}/bye"
        args = [
            "--name",
            f"Interop {kind}",
            "--redirect-uri",
            redirect_uri,
            "--post-logout-redirect-uri",
            bye,
            "--backchannel-logout-uri",
            self.backchannel.uri(kind),
            *spec["args"],
        ]
        private_jwk = None
        if spec["auth"] == "private_key_jwt":
            key = client_key(spec["key"], f"interop-{kind}")
            jwks = self.tmp_path / f"{kind}.jwks.json"
            jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
            private_jwk = key.as_dict(private=True)
            args += ["--auth-method", "private_key_jwt", "--jwks", str(jwks)]
        registered = clients_create(self.provider, *args)
        rp = Rp(
            name=kind,
            client_id=registered["client_id"],
            client_secret=registered["client_secret"],
            auth=spec["auth"],
            id_token_alg=spec["alg"],
            redirect_uri=redirect_uri,
            post_logout_redirect_uri=bye,
            private_jwk=private_jwk,
        )
        assert (rp.client_secret is None) == (rp.auth in ("none", "private_key_jwt")), registered
        self.discover(rp)
        self.made[kind] = rp
        return rp

    def discover(self, rp: Rp) -> dict[str, Any]:
        self.provider.ready()
        return self.driver(  # type: ignore[no-any-return]
            "discover",
            name=rp.name,
            issuer=self.provider.issuer,
            client_id=rp.client_id,
            client_secret=rp.client_secret,
            auth=rp.auth,
            private_jwk=rp.private_jwk,
            id_token_alg=rp.id_token_alg,
        )

    def resource_server(self) -> Rp:
        """A confidential service that only introspects (``--grant client_credentials``)."""
        if "resource_server" not in self.made:
            registered = clients_create(
                self.provider, "--name", "Interop API", "--grant", "client_credentials"
            )
            rp = Rp(
                name="resource_server",
                client_id=registered["client_id"],
                client_secret=registered["client_secret"],
                auth="client_secret_basic",
                id_token_alg="ES256",
                redirect_uri="",
                post_logout_redirect_uri="",
            )
            self.discover(rp)
            self.made["resource_server"] = rp
        return self.made["resource_server"]


@pytest.fixture
def rps(
    provider: Provider, driver: Driver, backchannel: BackchannelReceiver, tmp_path: Path
) -> Rps:
    return Rps(provider, driver, backchannel, tmp_path)


# --- the person and their browser ----------------------------------------------------------------


@pytest.fixture
def anne(env: dict[str, str], make_card: Callable[..., Card]) -> Person:
    """An active professional with a password and a bound SoftHSM2 card, as activation leaves
    them (written to the provider's database before it serves them)."""
    services = Services.from_settings(load_settings(env), argon2=CHEAP)
    try:
        data = (
            "matricule,given_name,family_name,profession,provider_code\n"
            f"{ANNE},Anne,Muller,doctor,123456-78\n"
        ).encode()
        with services.db.transaction() as db:
            import_directory(db, data, actor="test", clock=services.clock)
        return activate(services, ANNE, make_card(given_name="Anne", family_name="Muller"))
    finally:
        services.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def location(self) -> str:
        return str(self.headers["Location"])

    def json(self) -> Any:
        return json.loads(self.body)


class Browser:
    """The person's browser, over plain HTTP: its own cookies, redirects followed by hand."""

    def __init__(self, issuer: str, softhsm: SoftHSM) -> None:
        self.issuer = issuer
        self.softhsm = softhsm
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect()
        )

    def request(self, url: str, body: dict[str, Any] | None = None) -> Reply:
        url = urllib.parse.urljoin(self.issuer + "/", url)
        data = None
        headers = {"Accept": "text/html,application/json", "User-Agent": "interop-browser"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers)
        try:
            with self.opener.open(req, timeout=30) as response:
                return Reply(response.status, response.headers, response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, exc.headers, exc.read())

    def sign_in(self, flow_id: str, person: Person, method: str) -> dict[str, Any]:
        """The sign-in page's work: the flow, then the password or the card. The flow's JSON."""
        flow = self.request(f"/api/login/{flow_id}")
        assert flow.status == 200, flow.body
        data = flow.json()
        if method == "password":
            signed = self.request(
                f"/api/login/{flow_id}/password",
                {
                    "csrf_token": data["csrf_token"],
                    "matricule": person.matricule,
                    "password": PASSWORD,
                },
            )
        else:
            challenge = data["challenge"]
            token = sign_challenge(
                self.softhsm, person.card, nonce=challenge["nonce"], origin=challenge["origin"]
            )
            signed = self.request(
                f"/api/login/{flow_id}/smartcard",
                {"csrf_token": data["csrf_token"], "auth_token": token},
            )
        assert signed.status == 200, signed.body
        data["redirect_to"] = signed.json()["redirect_to"]
        return data

    def authorize(
        self, url: str, rp: Rp, person: Person | None = None, method: str = "password"
    ) -> tuple[str, dict[str, Any] | None]:
        """Open the authorization URL; sign in if asked to. The URL the provider redirects back
        to (the relying service's callback), and the sign-in flow if there was one."""
        reply = self.request(url)
        flow = None
        if reply.status in (302, 303) and reply.location.startswith("/login?flow="):
            assert person is not None, "the provider asked for a sign-in"
            page = self.request(reply.location)
            assert page.status == 200, page.body[:500]
            flow_id = urllib.parse.parse_qs(urllib.parse.urlsplit(reply.location).query)["flow"][0]
            flow = self.sign_in(flow_id, person, method)
            assert flow["redirect_to"].startswith(self.issuer + "/authorize?"), flow
            reply = self.request(flow["redirect_to"])
        assert reply.status in (302, 303), (reply.status, reply.body[:500])
        assert reply.location.startswith(rp.redirect_uri + "?"), reply.location
        return reply.location, flow


@pytest.fixture
def browser(provider: Provider, softhsm: SoftHSM) -> Callable[[], Browser]:
    def make() -> Browser:
        provider.ready()
        return Browser(provider.issuer, softhsm)

    return make


# --- flows ---------------------------------------------------------------------------------------


@dataclass
class SignedIn:
    """One authorization: what the driver got (tokens, validated) and the sign-in flow, if any."""

    tokens: dict[str, Any]
    flow: dict[str, Any] | None
    callback: str

    @property
    def id_claims(self) -> dict[str, Any]:
        return self.tokens["id_token_claims"]  # type: ignore[no-any-return]

    @property
    def at_claims(self) -> dict[str, Any]:
        return self.tokens["access_token_claims"]  # type: ignore[no-any-return]


def authorization(
    driver: Driver,
    browser: Browser,
    rp: Rp,
    person: Person | None = None,
    *,
    method: str = "password",
    scope: str = SCOPE,
    max_age: int | None = None,
    **params: str,
) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """The driver makes the authorization request, the browser takes it to the provider (and
    signs in if asked): the request, the callback URL and the sign-in flow, if there was one."""
    request = driver(
        "authorize",
        name=rp.name,
        redirect_uri=rp.redirect_uri,
        scope=scope,
        params=params,
        max_age=max_age,
    )
    callback, flow = browser.authorize(request["url"], rp, person, method)
    return request, callback, flow


def sign_in(
    driver: Driver,
    browser: Browser,
    rp: Rp,
    person: Person | None = None,
    *,
    method: str = "password",
    scope: str = SCOPE,
    max_age: int | None = None,
    **params: str,
) -> SignedIn:
    """Authorization, sign-in if needed, and the code exchange, all checked by openid-client."""
    request, callback, flow = authorization(
        driver, browser, rp, person, method=method, scope=scope, max_age=max_age, **params
    )
    tokens = driver("callback", name=rp.name, state=request["state"], url=callback)
    return SignedIn(tokens, flow, callback)


def introspector(rps: Rps, rp: Rp) -> Rp:
    """Who introspects ``rp``'s tokens: itself when confidential, else a resource server (RFC 7662
    requires an authenticated caller; authsvc lets confidential clients introspect access tokens,
    and a refresh token only by the client it was issued to)."""
    return rps.resource_server() if rp.public else rp
