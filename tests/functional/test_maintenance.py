"""Housekeeping (authsvc.maintenance): what has served its purpose is deleted a day after it
expired, old delivered mail after 30 days; from the outbox worker about once an hour, and with
``authsvc purge``."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select

from authsvc import matricule
from authsvc.accounts.models import Account
from authsvc.activation import letters
from authsvc.activation.flows import ActivationFlow
from authsvc.app import Services
from authsvc.clock import FrozenClock
from authsvc.directory.importer import import_directory
from authsvc.login.models import LoginFlow
from authsvc.maintenance import purge
from authsvc.oidc.models import AccessToken, AuthorizationCode, Client, TokenFamily, UsedAssertion
from authsvc.outbox.models import OutboxMessage
from authsvc.outbox.service import Outbox, OutboxWorker
from authsvc.pki.challenges import issue_challenge

M = matricule.make(date(1971, 6, 30), 5)
TABLES = {
    "activation_flows": ActivationFlow,
    "authorization_codes": AuthorizationCode,
    "access_tokens": AccessToken,
    "used_client_assertions": UsedAssertion,
    "login_flows": LoginFlow,
    "outbox": OutboxMessage,
}


def _rows(services: Services, clock: FrozenClock, tag: str, *, expires_in: timedelta) -> None:
    """One row of each kind, expiring ``expires_in`` from now (negative: in the past)."""
    now = clock.now()
    expires = now + expires_in
    with services.db.transaction() as s:
        account = s.scalars(select(Account)).one()
        letter_id = s.scalars(select(letters.ActivationLetter.id)).first()
        s.add(
            ActivationFlow(
                id=f"flow-{tag}",
                letter_id=letter_id,
                account_id=account.id,
                state="email_required",
                binding_hash="x",
                csrf_token="x",
                lang="fr",
                created_at=expires - timedelta(hours=1),
                updated_at=expires - timedelta(hours=1),
                expires_at=expires,
            )
        )
        family = TokenFamily(
            id=uuid.uuid4(), client_id="rp", account_id=account.id, scope="openid", created_at=now
        )
        s.add(family)
        s.add(
            AuthorizationCode(
                code_hash=f"code-{tag}",
                client_id="rp",
                account_id=account.id,
                session_id="s",
                redirect_uri="https://rp.example/cb",
                scope="openid",
                code_challenge="c",
                code_challenge_method="S256",
                acr="low",
                amr=["pwd"],
                auth_time=now,
                created_at=expires - timedelta(seconds=60),
                expires_at=expires,
            )
        )
        s.flush()
        s.add(AccessToken(jti=f"jti-{tag}", family_id=family.id, expires_at=expires))
        s.add(UsedAssertion(client_id="rp", jti=f"a-{tag}", expires_at=expires))
        s.add(
            LoginFlow(
                id=f"login-{tag}",
                binding_hash="x",
                csrf_token="x",
                client_id="rp",
                request={},
                required_acr="low",
                lang="fr",
                created_at=expires - timedelta(minutes=30),
                expires_at=expires,
            )
        )
        done = OutboxMessage(
            kind="mail",
            payload=None,
            summary=f"mail {tag}",
            created_at=expires,
            next_attempt_at=expires,
            attempts=1,
            delivered_at=expires,
        )
        s.add(done)
        issue_challenge(
            s, f"flow-{tag}", "http://127.0.0.1:5000", FrozenClock(expires - timedelta(minutes=5))
        )


def _counts(services: Services) -> dict[str, int]:
    from authsvc.pki.models import SmartcardChallenge

    with services.db.transaction() as s:
        counts = {
            name: int(s.scalar(select(func.count()).select_from(model)) or 0)
            for name, model in TABLES.items()
        }
        counts["smartcard_challenges"] = int(
            s.scalar(select(func.count()).select_from(SmartcardChallenge)) or 0
        )
    return counts


def _setup(services: Services, clock: FrozenClock) -> None:
    with services.db.transaction() as s:
        import_directory(
            s,
            f"matricule,given_name,family_name,profession,provider_code\n{M},A,B,doctor,1\n".encode(),
            actor="t",
            clock=clock,
        )
        letters.issue(s, M, hasher=services.hasher, actor="t", clock=clock)
        s.add(
            Client(
                client_id="rp",
                name="RP",
                secret_hash=None,
                token_endpoint_auth_method="none",
                redirect_uris=["https://rp.example/cb"],
                post_logout_redirect_uris=[],
                backchannel_logout_uri=None,
                extra_scopes=[],
                grant_types=["authorization_code"],
                require_acr=None,
                subject_type="public",
                id_token_signed_response_alg="ES256",
                jwks=None,
                created_at=clock.now(),
            )
        )


def test_purge_deletes_only_what_is_past_its_retention(
    services: Services, clock: FrozenClock
) -> None:
    _setup(services, clock)
    _rows(services, clock, "old", expires_in=-timedelta(days=1, minutes=1))  # a day and a bit ago
    _rows(services, clock, "recent", expires_in=-timedelta(hours=23))  # kept for investigations
    _rows(services, clock, "live", expires_in=timedelta(minutes=5))
    with services.db.transaction() as s:  # delivered 31 days ago, abandoned 29 days ago
        s.add(
            OutboxMessage(
                kind="mail",
                summary="very old",
                created_at=clock.now() - timedelta(days=31),
                next_attempt_at=clock.now(),
                attempts=1,
                delivered_at=clock.now() - timedelta(days=31),
            )
        )
        s.add(
            OutboxMessage(
                kind="mail",
                summary="abandoned",
                created_at=clock.now() - timedelta(days=32),
                next_attempt_at=clock.now(),
                attempts=9,
                abandoned_at=clock.now() - timedelta(days=29),
            )
        )
        s.add(  # still to be delivered, however old: never purged
            OutboxMessage(
                kind="mail",
                summary="pending",
                created_at=clock.now() - timedelta(days=40),
                next_attempt_at=clock.now(),
                attempts=0,
            )
        )
    before = _counts(services)
    purged = purge(services)
    after = _counts(services)
    assert purged == {
        "smartcard_challenges": 1,
        "activation_flows": 1,
        "authorization_codes": 1,
        "access_tokens": 1,
        "used_client_assertions": 1,
        "login_flows": 1,
        "outbox": 1,  # the mail delivered 31 days ago; those of the three flows are recent
    }
    assert {name: before[name] - after[name] for name in before} == purged
    with services.db.transaction() as s:
        assert s.get(ActivationFlow, "flow-recent") is not None
        assert s.get(ActivationFlow, "flow-old") is None
        summaries = set(s.scalars(select(OutboxMessage.summary)))
        assert {"abandoned", "pending"} <= summaries and "very old" not in summaries
    assert purge(services) == dict.fromkeys(purged, 0)  # nothing more to do


def test_completed_activation_flows_go_a_day_after_completion(
    services: Services, clock: FrozenClock
) -> None:
    _setup(services, clock)
    _rows(services, clock, "done", expires_in=timedelta(minutes=30))
    with services.db.transaction() as s:
        s.get_one(ActivationFlow, "flow-done").completed_at = clock.now()
    clock.advance(hours=23)
    assert purge(services)["activation_flows"] == 0
    clock.advance(hours=2)
    assert purge(services)["activation_flows"] == 1


def test_purge_works_in_batches(services: Services, clock: FrozenClock) -> None:
    with services.db.transaction() as s:
        for i in range(25):
            s.add(
                UsedAssertion(
                    client_id="rp", jti=f"j{i}", expires_at=clock.now() - timedelta(days=2)
                )
            )
    assert purge(services, batch=10)["used_client_assertions"] == 25


def test_the_outbox_worker_purges_about_once_an_hour(services: Services) -> None:
    calls: list[float] = []
    worker = OutboxWorker(
        services.outbox,
        interval=0.01,
        maintenance=lambda: calls.append(time.monotonic()),
        maintenance_interval=0.2,
    )
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert len(calls) >= 3
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(gap >= 0.19 for gap in gaps), gaps  # not at every round: once per interval


def test_a_failing_purge_does_not_stop_delivery(services: Services) -> None:
    delivered: list[Any] = []

    def broken() -> None:
        raise RuntimeError("database gone")

    outbox = Outbox(services.db, services.sealer, {"mail": delivered.append}, clock=services.clock)
    worker = OutboxWorker(outbox, maintenance=broken, maintenance_interval=0.0)
    assert worker.run_maintenance_if_due()
    assert worker.run_once().delivered == 0  # still working


def test_services_wire_the_purge_into_the_worker(services: Services) -> None:
    assert services.outbox_worker.maintenance is not None
    assert services.outbox_worker.maintenance_interval == 3600


def test_cli_purge(cli, services: Services, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    with services.db.transaction() as s:
        s.add(UsedAssertion(client_id="rp", jti="old", expires_at=clock.now() - timedelta(days=3)))
    result = cli("purge", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json["purged"]["used_client_assertions"] == 1
    text = cli("purge")
    assert text.exit_code == 0
    assert "used_client_assertions: 0 purged" in text.stdout
