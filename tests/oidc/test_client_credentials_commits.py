"""client_credentials with deferred, grouped writes (views._endpoint, Provider.cached_client):
the client read from a cache never outlives its disabling or a new secret, and every issued token
is committed exactly once, with its audit event, under concurrent requests."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import func, select, update

from authsvc.audit import service as audit
from authsvc.audit.models import AuditEvent
from authsvc.audit.tags import EventTag
from authsvc.oidc.models import AccessToken, Client, TokenFamily
from authsvc.security.secrets import Purpose

from .conftest import basic

CC = {"grant_type": "client_credentials"}


def count(services: Any, what: Any) -> int:
    with services.db.read_transaction() as s:
        return int(s.scalar(select(func.count()).select_from(what)) or 0)


def test_a_disabled_client_gets_nothing_at_once(new_client, tokens, services) -> None:  # type: ignore[no-untyped-def]
    service = new_client(name="Connector", grants=["client_credentials"], redirect_uris=[])
    first = tokens.client.post("/token", data=CC, headers=basic(service))
    assert first.status_code == 200, first.json  # the client is now in the instance's cache
    families = count(services, TokenFamily)
    with services.db.transaction() as s:
        s.execute(
            update(Client)
            .where(Client.client_id == service.client_id)
            .values(disabled_at=services.clock.now())
        )
    refused = tokens.client.post("/token", data=CC, headers=basic(service))
    assert refused.status_code == 401
    assert refused.json["error"] == "invalid_client"
    assert refused.headers["Cache-Control"] == "no-store"
    assert count(services, TokenFamily) == families  # nothing issued, nothing half-written
    # and it stays refused (read afresh: unknown to the cache now)
    again = tokens.client.post("/token", data=CC, headers=basic(service))
    assert again.status_code == 401 and again.json["error"] == "invalid_client"


def test_a_new_secret_refuses_the_old_one_at_once(new_client, tokens, services) -> None:  # type: ignore[no-untyped-def]
    service = new_client(name="Connector", grants=["client_credentials"], redirect_uris=[])
    assert tokens.client.post("/token", data=CC, headers=basic(service)).status_code == 200
    new_secret = "a-new-secret-of-enough-length-0123456789"
    with services.db.transaction() as s:
        s.execute(
            update(Client)
            .where(Client.client_id == service.client_id)
            .values(secret_hash=services.hasher.hash(Purpose.CLIENT_SECRET, new_secret))
        )
    old = tokens.client.post("/token", data=CC, headers=basic(service))
    assert old.status_code == 401 and old.json["error"] == "invalid_client"
    service.client_secret = new_secret
    new = tokens.client.post("/token", data=CC, headers=basic(service))
    assert new.status_code == 200, new.json


def test_the_cache_is_not_a_memory_of_unknown_clients(new_client, tokens) -> None:  # type: ignore[no-untyped-def]
    service = new_client(name="Connector", grants=["client_credentials"], redirect_uris=[])
    wrong = type(service)(service.client_id, "wrong-secret", "")
    assert tokens.client.post("/token", data=CC, headers=basic(wrong)).status_code == 401
    assert tokens.client.post("/token", data=CC, headers=basic(service)).status_code == 200
    nobody = type(service)("nobody", "x", "")
    response = tokens.client.post("/token", data=CC, headers=basic(nobody))
    assert response.status_code == 401 and response.json["error"] == "invalid_client"


def test_concurrent_requests_each_committed_once(new_client, app, services) -> None:  # type: ignore[no-untyped-def]
    """Eight threads of one instance ask for tokens at once (real concurrency on PostgreSQL):
    every token answered is registered (it introspects as active), exactly one family and one
    audit event per token, and the audit trail verifies."""
    service = new_client(name="Connector", grants=["client_credentials"], redirect_uris=[])
    api = new_client(name="Records API", grants=["client_credentials"], redirect_uris=[])
    families = count(services, TokenFamily)
    issued: list[str] = []
    failures: list[Any] = []

    def work() -> None:
        client = app.test_client()
        for _ in range(12):
            response = client.post("/token", data=CC, headers=basic(service))
            if response.status_code != 200:
                failures.append(response.json)
            else:
                issued.append(response.json["access_token"])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert len(issued) == 96
    assert count(services, TokenFamily) == families + 96
    assert count(services, AccessToken) >= 96
    with services.db.read_transaction() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.tag == EventTag.TOKENS_ISSUED)
            )
            == 96
        )
        result = audit.verify(s)
    assert result.ok, result.problems
    commits = services.oidc.commits
    assert commits.committed >= 96
    checker = app.test_client()
    for token in issued[::12]:
        info = checker.post("/introspect", data={"token": token}, headers=basic(api)).json
        assert info["active"] is True, info
    services.clock.advance(seconds=301)
    info = checker.post("/introspect", data={"token": issued[0]}, headers=basic(api)).json
    assert info == {"active": False}
