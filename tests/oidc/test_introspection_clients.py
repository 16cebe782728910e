"""Introspection authenticates its client from the per-process cache (Provider.cached_client) and
re-checks it in the token's own query (server._query_token): a resource server disabled, or given a
new secret, learns nothing more at once — whether the token it asks about exists or not, is an
access token or a refresh token."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from authsvc.oidc.models import Client
from authsvc.security.secrets import Purpose

from .conftest import basic, full_sign_in


def introspect(tokens: Any, caller: Any, token: str) -> Any:
    return tokens.client.post("/introspect", data={"token": token}, headers=basic(caller))


def change(services: Any, client_id: str, **values: Any) -> None:
    with services.db.transaction() as s:
        s.execute(update(Client).where(Client.client_id == client_id).values(**values))


@pytest.mark.parametrize("what", ["access_token", "refresh_token", "unknown"])
@pytest.mark.parametrize("how", ["disabled", "new secret"])
def test_a_changed_client_is_refused_at_once(  # type: ignore[no-untyped-def]
    browser, anne, rp, new_client, tokens, services, what: str, how: str
) -> None:
    issued = full_sign_in(browser(), rp, anne, tokens)
    token = "not-a-token" if what == "unknown" else issued[what]
    # the relying service itself for its refresh token (only its own), a resource server otherwise
    caller = rp if what == "refresh_token" else new_client(name="Resource server")
    first = introspect(tokens, caller, token)
    assert first.status_code == 200, first.json  # the caller is now in the instance's cache
    assert first.json["active"] is (what != "unknown")
    if how == "disabled":
        change(services, caller.client_id, disabled_at=services.clock.now())
    else:
        new_hash = services.hasher.hash(Purpose.CLIENT_SECRET, "a-new-secret-0123456789")
        change(services, caller.client_id, secret_hash=new_hash)
    refused = introspect(tokens, caller, token)
    assert refused.status_code == 401, refused.json
    assert refused.json["error"] == "invalid_client"
    assert "active" not in refused.json
    again = introspect(tokens, caller, token)  # read afresh now: still refused
    assert again.status_code == 401 and again.json["error"] == "invalid_client"
