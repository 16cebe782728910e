"""PostgreSQL restarted under load (SECURITY "Nothing lost, nothing half-done"): while threads
call discovery, /healthz, the token endpoint and the sign-in API of a gunicorn instance, and
activations and key rotations complete, the database is stopped (``pg_ctl stop -m fast``) and
started again. Every answer meanwhile is a clean one — 503 JSON while it is down, never a 500,
never a hang beyond a bound; the instance recovers by itself, without a restart; and afterwards
no activation and no key rotation is half-done.

The cluster is the test's own (``initdb`` in a temporary folder, a free port): the machine's
PostgreSQL is never stopped.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from authsvc import matricule
from authsvc.accounts.models import Account, AccountStatus
from authsvc.activation import letters
from authsvc.activation.models import ActivationLetter
from authsvc.app import Services
from authsvc.audit.models import AuditEvent
from authsvc.audit.service import verify
from authsvc.cards.models import Card, CardStatus
from authsvc.config import load_settings
from authsvc.directory.importer import import_directory
from authsvc.oidc.clients import register
from authsvc.oidc.keys import ALGORITHMS
from authsvc.oidc.models import SigningKey
from authsvc.outbox.models import OutboxMessage
from authsvc.security.passwords import CHEAP

from ..card_signing import sign_challenge
from ..mailserver import SmtpServer
from ..oidc.conftest import Browser, RegisteredClient, Tokens, activate, basic, full_sign_in, pkce
from ..servers import Database, HttpClient, Instance, PostgresCluster, wait_until

pytestmark = pytest.mark.postgresql_only

#: no request may take longer than this, database down or not (connect timeout 5 s, pool 10 s)
BOUND = 20.0
#: how long the database stays down
DOWN_FOR = 4.0
PASSWORD = "zebra lantern quietly orbit"
ACTIVATIONS = 4


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster()
    except RuntimeError as exc:
        pytest.skip(f"{exc}: the PostgreSQL restart test needs its own cluster")
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@dataclass
class Outcome:
    what: str
    status: int | None
    elapsed: float
    body: Any = None
    error: str | None = None


@dataclass
class Load:
    """Threads that call the instance until told to stop; every answer is kept."""

    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def call(self, what: str, request: Callable[[], Any]) -> Outcome:
        started = time.monotonic()
        try:
            response = request()
        except Exception as exc:  # a reset connection, a timeout: recorded, judged below
            outcome = Outcome(what, None, time.monotonic() - started, error=repr(exc))
        else:
            outcome = Outcome(
                what, response.status_code, time.monotonic() - started, _body(response)
            )
        self.outcomes.append(outcome)
        return outcome

    def loop(self, what: str, request: Callable[[], Any], pause: float = 0.05) -> None:
        def run() -> None:
            deadline = time.monotonic() + 120  # bounded whatever happens
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.call(what, request)
                self.stop.wait(pause)

        thread = threading.Thread(target=run, name=f"load-{what}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(BOUND + 5)


def _body(response: Any) -> Any:
    try:
        return json.loads(response.data)
    except ValueError:
        return response.data[:200]


class Activation:
    """A person activating their account over HTTP, up to the last step (the card)."""

    def __init__(self, client: HttpClient, smtp: SmtpServer, softhsm: Any) -> None:
        self.client, self.smtp, self.softhsm = client, smtp, softhsm
        self.flow: dict[str, Any] = {}
        self.challenge: dict[str, Any] = {}

    def post(self, step: str, **body: Any) -> Any:
        body.setdefault("csrf_token", self.flow["csrf_token"])
        return self.client.post(f"/api/activation/{self.flow['flow_id']}/{step}", json=body)

    def to_smartcard(self, code: str, number: str, address: str) -> None:
        started = self.client.post(
            "/api/activation", json={"activation_code": code, "matricule": number}
        )
        assert started.status_code == 201, started.json
        self.flow = started.json
        assert self.post("email", email=address).status_code == 200
        mail = wait_until(
            lambda: [m for m in self.smtp.inbox.messages if m["To"] == address], 20, "the code"
        )[0]
        assert self.post("email/verify", code=self.smtp.inbox.code(mail)).status_code == 200
        chosen = self.post("password", password=PASSWORD)
        assert chosen.status_code == 200, chosen.json
        self.challenge = chosen.json["challenge"]

    def complete(self, card: Any) -> Any:
        token = sign_challenge(
            self.softhsm, card, nonce=self.challenge["nonce"], origin=self.challenge["origin"]
        )
        return self.post("smartcard", auth_token=token)


def test_postgresql_restarted_under_load(  # type: ignore[no-untyped-def]
    postgres: PostgresCluster,
    softhsm,
    test_ca,
    revocation_server,
    smtp_server: SmtpServer,
    tmp_path,
) -> None:
    database = Database(postgres.url, "authsvc_fault").create()
    env = {
        "AUTHSVC_DATABASE_URL": database.url,
        "AUTHSVC_SECRET_KEY": secrets.token_urlsafe(48),
        "AUTHSVC_ISSUER": "http://127.0.0.1:5000",
        "AUTHSVC_INSTANCE_DIR": str(tmp_path),
        "AUTHSVC_CARD_TRUST_ANCHORS": str(test_ca.trust_anchors),
        "AUTHSVC_SMTP_HOST": "127.0.0.1",
        "AUTHSVC_SMTP_PORT": str(smtp_server.port),
        "AUTHSVC_RATELIMIT_STORAGE": "memory://",
    }
    from .. import conftest as root

    upgraded = root.run_authsvc("db", "upgrade", env=_isolated(env))
    assert upgraded.returncode == 0, upgraded.stderr
    services = Services.from_settings(load_settings(_isolated(env)), argon2=CHEAP)
    instance = Instance("fault", _isolated(env), workers=1, threads=8)
    try:
        services.keys.ready()
        people = _people(services, test_ca, softhsm)
        anne = people.pop()
        with services.db.transaction() as db:
            reg = register(
                db, name="RP", redirect_uris=["https://rp.example.test/cb"],
                hasher=services.hasher, actor="test", clock=services.clock,
            )  # fmt: skip
            connector = register(
                db, name="Connector", redirect_uris=[], grants=["client_credentials"],
                hasher=services.hasher, actor="test", clock=services.clock,
            )  # fmt: skip
        rp = RegisteredClient(reg.client_id, reg.client_secret, "https://rp.example.test/cb")
        service = RegisteredClient(connector.client_id, connector.client_secret, "")
        instance.start()
        http = instance.client()

        # activations up to their last step, a sign-in flow for the load
        activations = []
        for number, code, card in people:
            a = Activation(instance.client(), smtp_server, softhsm)
            a.to_smartcard(code, number, f"{number}@example.lu")
            activations.append((a, card, number))
        browser = Browser(instance.client(), softhsm)
        _, challenge = pkce()
        flow_id = browser.flow_of(
            browser.authorize(rp, code_challenge=challenge, code_challenge_method="S256")
        )

        load = Load()
        load.loop("discovery", lambda: http.get("/.well-known/openid-configuration"))
        load.loop("healthz", lambda: http.get("/healthz"))
        load.loop("jwks", lambda: http.get("/jwks.json"))
        load.loop(
            "token",
            lambda: http.post(
                "/token", data={"grant_type": "client_credentials"}, headers=basic(service)
            ),
        )
        load.loop("login-flow", lambda: browser.client.get(f"/api/login/{flow_id}"))

        def sign_in() -> Any:
            flow = browser.client.get(f"/api/login/{flow_id}")
            if flow.status_code != 200:
                return flow
            return browser.client.post(
                f"/api/login/{flow_id}/password",
                json={"csrf_token": flow.json["csrf_token"], "matricule": anne.matricule,
                      "password": PASSWORD},
            )  # fmt: skip

        load.loop("sign-in", sign_in, pause=1.5)
        rotations = Counter[str]()

        def rotate() -> None:
            while not load.stop.is_set():
                try:
                    services.keys.rotate(actor="test")
                    rotations["done"] += 1
                except SQLAlchemyError:
                    rotations["failed"] += 1
                load.stop.wait(0.3)

        rotator = threading.Thread(target=rotate, daemon=True)
        rotator.start()

        time.sleep(1.0)
        completions: list[Outcome] = []
        # the last steps of the activations: before the stop, as it stops, while down, after
        plan = [0.0, 1.0, 1.0 + DOWN_FOR / 2, 1.0 + DOWN_FOR + 1.5]
        t0 = time.monotonic()

        def complete_all() -> None:
            for (a, card, _), at in zip(activations, plan, strict=True):
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                completions.append(load.call("activation", lambda a=a, card=card: a.complete(card)))

        completer = threading.Thread(target=complete_all, daemon=True)
        completer.start()
        time.sleep(1.0)
        before_stop = time.monotonic()
        postgres.stop("fast")
        stopped = time.monotonic()
        time.sleep(DOWN_FOR)
        postgres.start()
        started = time.monotonic()

        # the instance recovers by itself
        wait_until(lambda: http.get("/healthz").status_code == 200, 30, "/healthz 200 again")
        recovered = time.monotonic()
        time.sleep(2)
        completer.join(BOUND + 10)
        load.finish()
        rotator.join(10)
        assert instance.proc is not None and instance.proc.poll() is None
        assert len(re.findall(r"Booting worker", instance.output(None))) == 1, instance.output()

        # every answer was a clean one, within the bound
        outcomes = load.outcomes
        failures = [
            o for o in outcomes if o.status is None or (o.status >= 500 and o.status != 503)
        ]
        assert not failures, (failures[:5], instance.output())
        assert max(o.elapsed for o in outcomes) < BOUND
        unavailable = [o for o in outcomes if o.status == 503]
        assert unavailable, "the outage was not seen: nothing was tested"
        for o in unavailable:
            if o.what == "healthz":
                assert o.body["status"] == "unavailable", o
            else:
                assert o.body["error"] == "temporarily_unavailable", o
        seen = Counter(o.what for o in unavailable)
        assert seen["token"] and seen["healthz"] and seen["login-flow"], seen
        # after the restart, everything answers again
        assert http.get("/.well-known/openid-configuration").status_code == 200
        cc = http.post("/token", data={"grant_type": "client_credentials"}, headers=basic(service))
        assert cc.status_code == 200, cc.json
        token = full_sign_in(Browser(instance.client(), softhsm), rp, anne, Tokens(http))
        assert Tokens(http).refresh(rp, token["refresh_token"]).status_code == 200
        assert rotations["done"] >= 1, rotations

        # nothing half-done: activations, key rotations, the audit trail
        _assert_activations_whole(services, [number for _, _, number in activations])
        _assert_keys_whole(services)
        with services.db.read_transaction() as db:
            assert verify(db).ok
        timings = {"stopped": stopped - before_stop, "down": started - stopped,
                   "recovered_after": recovered - started}  # fmt: skip
        print("restart:", timings, "answers:", Counter((o.what, o.status) for o in outcomes))
        print("activations:", [c.status for c in completions], "rotations:", dict(rotations))
    finally:
        instance.stop()
        instance.remove_log()
        services.close()  # the cluster, and the database in it, go with the fixture


def _isolated(env: dict[str, str]) -> dict[str, str]:
    """``env``, with the developer's own AUTHSVC_* settings blanked out."""
    import os

    blank = {
        name: ""
        for name in os.environ
        if name.startswith("AUTHSVC_") and not name.startswith("AUTHSVC_TEST_")
    }
    return {**blank, **env}


def _people(services: Services, test_ca: Any, softhsm: Any) -> list[tuple[str, str, Any]]:
    """ACTIVATIONS professionals with a letter (number, code, card), and Anne (active)."""
    names = [(matricule.make(date(1975, 3, 1 + i), i + 1), f"Given{i}", f"Family{i}")
             for i in range(ACTIVATIONS + 1)]  # fmt: skip
    csv = "matricule,given_name,family_name,profession,provider_code\n" + "".join(
        f"{n},{g},{f},doctor,123456-78\n" for n, g, f in names
    )
    with services.db.transaction() as db:
        import_directory(db, csv.encode(), actor="test", clock=services.clock)
    out: list[Any] = []
    for number, given, family in names[:-1]:
        with services.db.transaction() as db:
            issued = letters.issue(db, number, hasher=services.hasher, actor="test")
        card = test_ca.issue_card(softhsm, given_name=given, family_name=family)
        out.append((number, issued.activation_code, card))
    number, given, family = names[-1]
    out.append(
        activate(
            services, number, test_ca.issue_card(softhsm, given_name=given, family_name=family)
        )
    )
    return out


def _assert_activations_whole(services: Services, numbers: list[str]) -> None:
    """letter used ⇔ account active ⇔ an active card bound ⇔ the completion audited and the
    "account active" mail queued — for every activation, whichever side of the outage it fell."""
    from authsvc.directory.models import Professional

    with services.db.read_transaction() as db:
        for number in numbers:
            professional = db.scalars(
                select(Professional).where(Professional.matricule == number)
            ).one()
            account = db.scalars(
                select(Account).where(Account.professional_id == professional.id)
            ).one()
            used = db.scalars(
                select(ActivationLetter).where(
                    ActivationLetter.professional_id == professional.id,
                    ActivationLetter.used_at.is_not(None),
                )
            ).all()
            cards = db.scalars(
                select(Card).where(Card.account_id == account.id, Card.status == CardStatus.ACTIVE)
            ).all()
            completed = db.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.tag == "activation:flow:completed")
                .where(AuditEvent.subject == f"professional:{number}")
            )
            mails = db.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.summary == f"account activated, to {number}@example.lu")
            )
            whole = (
                len(used),
                account.status == AccountStatus.ACTIVE,
                len(cards),
                completed,
                mails,
            )
            assert whole in ((0, False, 0, 0, 0), (1, True, 1, 1, 1)), (number, whole)


def _assert_keys_whole(services: Services) -> None:
    """One current key per algorithm; every key row complete and audited, every audited key
    there."""
    with services.db.read_transaction() as db:
        rows = db.scalars(select(SigningKey)).all()
        current = Counter(r.alg for r in rows if r.retired_at is None)
        assert current == dict.fromkeys(ALGORITHMS, 1), current
        for row in rows:
            assert row.public_jwk and row.public_jwk.get("kid", row.kid) == row.kid
            assert row.private_key or row.pkcs11_label, row.kid
            assert row.retired_at is None or row.expires_at is not None, row.kid
        audited = {
            e.data["kid"]
            for e in db.scalars(select(AuditEvent).where(AuditEvent.tag == "oidc:key:created"))
        }
        assert audited == {r.kid for r in rows}
