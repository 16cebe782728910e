"""``make run``: the demo of authsvc on one machine, in one command.

Sets up (idempotently) and starts, all on 127.0.0.1:

- the provider, ``authsvc serve``, on :5000, with the embedded SQLite database;
- the demo directory (three professionals) and an activation letter for the demo professional;
- the test LuxTrust CA, its CRL and OCSP responder on :5081, and a demo card on a SoftHSM2 token
  (``softhsm/``), with its PIN;
- the card agent, ``authsvc card-agent``, on :5480, trusting the provider's origin;
- the demo relying service (``demo/relying_party.py``, the shared care record's stand-in) on
  :5090, registered once as a client of the provider (``instance/demo-rp.json`` keeps its
  client id and secret).

Ctrl-C stops everything. State lives in ``$AUTHSVC_INSTANCE_DIR`` (default ``./instance``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authsvc import demo  # noqa: E402
from authsvc.app import Services  # noqa: E402
from authsvc.config import load_settings  # noqa: E402
from authsvc.oidc.clients import register  # noqa: E402
from authsvc.oidc.models import Client  # noqa: E402
from authsvc.security.secrets import Purpose  # noqa: E402
from softhsm.testca import RevocationServer, SoftHSM, TestCA  # noqa: E402

HOST = "127.0.0.1"
PORT = int(os.environ.get("PORT", "5000"))
CA_PORT = 5081
AGENT_PORT = 5480
CARD_LABEL = "demo-card"
CARD_PIN = "123456"
RP_PORT = 5090
RP_NAME = "Shared care record (demo)"
#: what the demo relying service needs beyond authsvc: Authlib's Flask client speaks HTTP with it
RP_REQUIREMENTS = ["requests>=2.32"]


def wait(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"error: {proc.args[1]} stopped with exit code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"error: {url} did not answer within {timeout:.0f}s")


def ensure_rp_requirements() -> None:
    """``make run`` installs what is missing: the demo relying service's HTTP client too."""
    if importlib.util.find_spec("requests") is None:
        print(f"installing {', '.join(RP_REQUIREMENTS)} (the demo relying service needs it)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *RP_REQUIREMENTS], check=True)


def register_demo_rp(services: Services, path: Path, base_url: str) -> dict[str, str]:
    """Register the demo relying service once; its client id and secret live in ``path``.

    Registered again only when the file is missing, or the database no longer knows that client
    (a fresh database), or its secret or URIs no longer match."""
    uris = {
        "redirect_uri": f"{base_url}/callback",
        "post_logout_redirect_uri": f"{base_url}/",
        "backchannel_logout_uri": f"{base_url}/backchannel-logout",
    }
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and all(saved.get(k) == v for k, v in uris.items()):
        with services.db.read_transaction() as db:
            row = db.get(Client, saved.get("client_id", ""))
            if (
                row is not None
                and row.disabled_at is None
                and row.secret_hash
                and services.hasher.verify(
                    Purpose.CLIENT_SECRET, str(saved.get("client_secret", "")), row.secret_hash
                )
            ):
                return saved
    with services.db.transaction() as db:
        registration = register(
            db,
            name=RP_NAME,
            redirect_uris=[uris["redirect_uri"]],
            post_logout_redirect_uris=[uris["post_logout_redirect_uri"]],
            backchannel_logout_uri=uris["backchannel_logout_uri"],
            hasher=services.hasher,
            actor="demo",
            clock=services.clock,
        )
        data = {**registration.to_dict(), **uris}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds a secret
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
    return {k: str(v) for k, v in data.items()}


def main() -> int:
    # the issuer follows the port unless it is set: the pages and the agent must agree on it
    os.environ.setdefault("AUTHSVC_ISSUER", f"http://{HOST}:{PORT}")
    settings = load_settings()
    instance = settings.instance_dir
    issuer = settings.issuer
    exe = Path(sys.executable).with_name("authsvc")

    # the test CA and the demo card
    ca = TestCA.open(instance / "demo-ca", base_url=f"http://{HOST}:{CA_PORT}")
    hsm = SoftHSM(instance / "softhsm")
    services = Services.from_settings(settings)
    state = demo.init(services)
    rp_url = f"http://{HOST}:{RP_PORT}"
    rp = register_demo_rp(services, instance / "demo-rp.json", rp_url)
    services.close()
    ensure_rp_requirements()
    given, family = state.name.split(" ", 1)
    if CARD_LABEL not in hsm.labels():
        ca.issue_card(
            hsm, given_name=given, family_name=family, label=CARD_LABEL, user_pin=CARD_PIN
        )

    env = {
        **os.environ,
        "AUTHSVC_CARD_TRUST_ANCHORS": os.environ.get(
            "AUTHSVC_CARD_TRUST_ANCHORS", str(ca.trust_anchors)
        ),
        "AUTHSVC_CARD_AGENT_URL": f"http://{HOST}:{AGENT_PORT}",
    }
    crl = RevocationServer(ca, CA_PORT).start()
    children: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        crl.stop()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        agent = subprocess.Popen(
            [
                str(exe),
                "card-agent",
                "--port",
                str(AGENT_PORT),
                "--trust-origin",
                settings.issuer_origin,
            ],
            env={**env, **hsm.env()},
        )
        children.append(agent)
        wait(f"http://{HOST}:{AGENT_PORT}/v1/status", agent)
        provider = subprocess.Popen(
            [str(exe), "serve", "--host", HOST, "--port", str(PORT)], env=env
        )
        children.append(provider)
        wait(f"{issuer}/healthz", provider)
        relying_party = subprocess.Popen(
            [sys.executable, str(ROOT / "demo" / "relying_party.py")],
            env={
                **os.environ,
                "DEMO_RP_ISSUER": issuer,
                "DEMO_RP_CLIENT_ID": rp["client_id"],
                "DEMO_RP_CLIENT_SECRET": rp["client_secret"],
                "DEMO_RP_BASE_URL": rp_url,
            },
        )
        children.append(relying_party)
        wait(f"{rp_url}/", relying_party)

        print(
            f"""
  authsvc is running — the demo
  ------------------------------------------------------------------------------
  activate an account:  {issuer}/activate
     matricule          {state.matricule}   ({state.name})
     activation code    {state.letter.activation_code if state.letter else "(account already active: no new letter)"}
     email              any address: the mail lands in {settings.mail_dir}/
     smartcard PIN      {CARD_PIN}   (card "{CARD_LABEL}" on SoftHSM2, typed in the card agent's window)
  then sign in to a service:
     shared care record {rp_url}   (demo relying service: password, then the card for patient records)
  health:               {issuer}/healthz
  card agent:           http://{HOST}:{AGENT_PORT}    CRL/OCSP: http://{HOST}:{CA_PORT}
  Ctrl-C stops everything.
""",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


if __name__ == "__main__":
    raise SystemExit(main())
