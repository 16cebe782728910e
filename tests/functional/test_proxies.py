"""Behind reverse proxies (AUTHSVC_TRUSTED_PROXIES): the per-IP limits and the audit trail see the
client's address, not the proxy's — and without the setting, a forged X-Forwarded-For changes
nothing."""

from __future__ import annotations

import dataclasses
import itertools

from sqlalchemy import select
from werkzeug.middleware.proxy_fix import ProxyFix

from authsvc import create_app
from authsvc.app import Services
from authsvc.audit.models import AuditEvent
from authsvc.security.passwords import CHEAP

PROXY = "10.0.0.2"
_typed = itertools.count()


def app_with(settings, clock, proxies: int):  # type: ignore[no-untyped-def]
    tuned = dataclasses.replace(settings, trusted_proxies=proxies)
    services = Services.from_settings(tuned, clock=clock, argon2=CHEAP)
    app = create_app(tuned, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)
    return app, services


def start(client, forwarded_for: str, **headers: str):  # type: ignore[no-untyped-def]
    # another (malformed) matricule each time: the per-matricule count is not what is tested
    body = {"activation_code": "AAAA-BBBB-CCCC-DDDD", "matricule": f"x{next(_typed)}"}
    return client.post(
        "/api/activation",
        json=body,
        headers={"X-Forwarded-For": forwarded_for, **headers},
        environ_base={"REMOTE_ADDR": PROXY},
    )


def audited_actors(services: Services) -> list[str]:
    with services.db.transaction() as s:
        return list(
            s.scalars(select(AuditEvent.actor).where(AuditEvent.tag == "activation:start:refused"))
        )


def test_behind_one_trusted_proxy_the_client_address_counts(settings, clock) -> None:  # type: ignore[no-untyped-def]
    app, services = app_with(settings, clock, 1)
    # what the application behind ProxyFix receives (no route of its own: metrics are global)
    seen: list[dict[str, str]] = []
    proxy_fix = app.wsgi_app
    while not isinstance(proxy_fix, ProxyFix):  # beneath the fast path (authsvc/web/fast.py)
        proxy_fix = proxy_fix.inner  # type: ignore[attr-defined]
    inner = proxy_fix.app

    def recorder(environ, start_response):  # type: ignore[no-untyped-def]
        seen.append(
            {
                "scheme": environ["wsgi.url_scheme"],
                "host": environ.get("HTTP_HOST", ""),
                "ip": environ.get("REMOTE_ADDR", ""),
            }
        )
        return inner(environ, start_response)

    proxy_fix.app = recorder
    client = app.test_client()
    try:
        # ten refusals for 203.0.113.7 through the proxy use up its per-IP limit …
        assert [start(client, "203.0.113.7").status_code for _ in range(10)] == [400] * 10
        assert start(client, "203.0.113.7").status_code == 429
        # … not the proxy's: another client behind the same proxy is still served
        assert start(client, "198.51.100.9").status_code == 400
        assert set(audited_actors(services)) == {"ip:203.0.113.7", "ip:198.51.100.9"}
        # the scheme and host the proxy saw are the request's
        client.get(
            "/healthz",
            headers={
                "X-Forwarded-For": "203.0.113.8",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "id.example.lu",
            },
            environ_base={"REMOTE_ADDR": PROXY},
        )
        assert seen[-1] == {"scheme": "https", "host": "id.example.lu", "ip": "203.0.113.8"}
    finally:
        services.close()


def test_only_the_trusted_hops_are_believed(settings, clock) -> None:  # type: ignore[no-untyped-def]
    """With one trusted proxy, the address it appended is the client's; whatever the client
    itself put in front is not believed."""
    app, services = app_with(settings, clock, 1)
    try:
        start(app.test_client(), "1.2.3.4, 203.0.113.7")
        assert audited_actors(services) == ["ip:203.0.113.7"]
    finally:
        services.close()


def test_without_trusted_proxies_x_forwarded_for_is_ignored(settings, clock) -> None:  # type: ignore[no-untyped-def]
    app, services = app_with(settings, clock, 0)
    client = app.test_client()
    try:
        # a client that forges a new X-Forwarded-For every time still hits its own limit
        statuses = [start(client, f"203.0.113.{i}").status_code for i in range(11)]
        assert statuses == [400] * 10 + [429]
        assert set(audited_actors(services)) == {f"ip:{PROXY}"}
    finally:
        services.close()
