"""Several authsvc instances behind one issuer, as a load balancer would put them: three
``gunicorn -c gunicorn.conf.py 'authsvc.wsgi:app'`` processes on loopback ports, sharing a fresh
PostgreSQL database (dropped afterwards), Redis (``AUTHSVC_RATELIMIT_STORAGE``, with a key prefix
of the test's own, deleted afterwards), the instance secret and the issuer. Each has its own
instance folder: nothing is shared through local files.

Only on PostgreSQL (``--db=postgresql``); skipped with a clear message when PostgreSQL or Redis
does not answer.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from authsvc import matricule
from authsvc.app import Services
from authsvc.config import load_settings
from authsvc.directory.importer import import_directory
from authsvc.oidc.clients import register
from authsvc.security.passwords import CHEAP
from softhsm.testca import SoftHSM, TestCA

from ..conftest import PG_ADMIN_URL
from ..mailserver import SmtpServer
from ..oidc.conftest import Browser, Person, RegisteredClient, Tokens, activate
from ..oidc.test_logout import Receiver
from ..servers import (
    REDIS_URL,
    Database,
    HttpClient,
    Instance,
    free_port,
    pg_reachable,
    redis_delete_prefix,
    redis_unreachable,
)

RP = "https://rp.example.test"


@dataclass
class Cluster:
    """The instances, what they share, and the test's own view of the database."""

    instances: list[Instance]
    env: dict[str, str]
    services: Services
    softhsm: SoftHSM
    test_ca: TestCA
    smtp: SmtpServer
    receiver: Receiver
    prefix: str
    _people: int = field(default=0)

    @property
    def a(self) -> Instance:
        return self.instances[0]

    @property
    def b(self) -> Instance:
        return self.instances[1]

    @property
    def c(self) -> Instance:
        return self.instances[2]

    def browser(self, instance: Instance) -> Browser:
        """A person's browser, talking to ``instance`` (``browser.client.at(url)`` for another)."""
        return Browser(instance.client(), self.softhsm)

    def tokens(self, instance: Instance) -> Tokens:
        """A relying service's back end, talking to ``instance``."""
        return Tokens(instance.client())

    def person(self, given_name: str = "Anne", family_name: str = "Muller") -> Person:
        """A new professional with an active account: a password and a bound card."""
        self._people += 1
        number = matricule.make(date(1960, 1, 1 + self._people % 28), self._people)
        csv = (
            "matricule,given_name,family_name,profession,provider_code\n"
            f"{number},{given_name},{family_name},doctor,123456-78\n"
        ).encode()
        with self.services.db.transaction() as db:
            import_directory(db, csv, actor="test", clock=self.services.clock)
        card = self.test_ca.issue_card(self.softhsm, given_name=given_name, family_name=family_name)
        return activate(self.services, number, card)

    def client(self, **options: Any) -> RegisteredClient:
        options.setdefault("name", "Shared care record")
        options.setdefault("redirect_uris", [f"{RP}/callback"])
        with self.services.db.transaction() as db:
            reg = register(
                db, hasher=self.services.hasher, actor="test", clock=self.services.clock, **options
            )
        return RegisteredClient(reg.client_id, reg.client_secret, options["redirect_uris"][0])

    def logs(self, tail: int | None = 6000) -> str:
        return "\n".join(f"--- {i.name} ---\n{i.output(tail)}" for i in self.instances)


def authsvc(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("authsvc")
    return subprocess.run(
        [str(exe), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="package")
def cluster(
    db_kind: str,
    softhsm: SoftHSM,
    test_ca: TestCA,
    revocation_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    if db_kind != "postgresql":  # never on SQLite (the tests are also marked postgresql_only)
        pytest.skip("several instances need PostgreSQL (run with --db=postgresql)")
    why = pg_reachable(PG_ADMIN_URL)
    if why:
        pytest.skip(f"PostgreSQL does not answer at {PG_ADMIN_URL}: {why}")
    why = redis_unreachable(REDIS_URL)
    if why:
        pytest.skip(f"{why}: the multi-instance tests need Redis for the shared limits")

    database = Database(PG_ADMIN_URL, "authsvc_multi").create()  # one for the package's tests
    prefix = f"authsvc-test-{secrets.token_hex(6)}"
    smtp = SmtpServer(free_port())
    smtp.start()
    receiver = Receiver(free_port())  # started by the test that needs it
    instances: list[Instance] = []
    services: Services | None = None
    try:
        env = {
            "AUTHSVC_DATABASE_URL": database.url,
            "AUTHSVC_SECRET_KEY": secrets.token_urlsafe(48),
            # one issuer for all: what the load balancer's address would be
            "AUTHSVC_ISSUER": f"http://127.0.0.1:{free_port()}",
            "AUTHSVC_RATELIMIT_STORAGE": REDIS_URL,
            "AUTHSVC_RATELIMIT_PREFIX": prefix,
            "AUTHSVC_CARD_TRUST_ANCHORS": str(test_ca.trust_anchors),
            "AUTHSVC_SMTP_HOST": "127.0.0.1",
            "AUTHSVC_SMTP_PORT": str(smtp.port),
            "AUTHSVC_LOG_LEVEL": "INFO",
            "AUTHSVC_INSTANCE_DIR": str(tmp_path_factory.mktemp("multi-cli")),
        }
        for name in list(os.environ):  # the developer's own settings must not leak in
            if name.startswith("AUTHSVC_") and not name.startswith("AUTHSVC_TEST_"):
                env.setdefault(name, "")
        upgraded = authsvc("db", "upgrade", env=env)
        assert upgraded.returncode == 0, upgraded.stderr
        services = Services.from_settings(load_settings(env), argon2=CHEAP)
        services.keys.ready()  # the deployment's first keys (see test_keys: made once)
        for name, workers in (("a", 2), ("b", 1), ("c", 1)):
            folder = tempfile.mkdtemp(prefix=f"authsvc-{name}-", dir=tmp_path_factory.getbasetemp())
            instances.append(
                Instance(name, {**env, "AUTHSVC_INSTANCE_DIR": folder}, workers=workers)
            )
        for instance in instances:  # at once, as a deployment would
            instance.spawn()
        for instance in instances:
            instance.wait_ready()
        yield Cluster(instances, env, services, softhsm, test_ca, smtp, receiver, prefix)
    finally:
        for instance in instances:
            instance.stop()
        for instance in instances:
            instance.remove_log()
        if services is not None:
            services.close()
        receiver.stop()
        smtp.stop()
        database.drop()
        redis_delete_prefix(REDIS_URL, prefix)


@pytest.fixture
def people(cluster: Cluster) -> Callable[..., Person]:
    return cluster.person


def http(instance: Instance) -> HttpClient:
    return instance.client()
