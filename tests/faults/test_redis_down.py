"""Redis down (the limits' storage): the endpoints that guard secrets fail closed — a clean 503
``temporarily_unavailable`` with ``Retry-After`` and a log line, never the request served without
its limit — and the others keep working; when Redis is back, so are the limits."""

from __future__ import annotations

import time
from typing import Any

import pytest
from limits.errors import StorageError

from authsvc.security.throttle import FailureThrottle

from ..conftest import log_text
from ..oidc.conftest import ANNE, full_sign_in, pkce
from ..servers import RedisServer, SilentServer

pytestmark = pytest.mark.usefixtures("revocation_server")

#: a request refused because Redis is down is answered within this (Redis timeouts: 1 s, 1 retry)
BOUND = 5.0


@pytest.fixture
def env(env: dict[str, str], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AUTHSVC_RATELIMIT_STORAGE", redis_server.url)
    return {**env, "AUTHSVC_RATELIMIT_STORAGE": redis_server.url}


def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def assert_fails_closed(response: Any, elapsed: float) -> None:
    assert response.status_code == 503, (response.status_code, response.json)
    assert response.json["error"] == "temporarily_unavailable"
    assert int(response.headers["Retry-After"]) > 0
    assert elapsed < BOUND, elapsed


def test_limited_endpoints_fail_closed_and_recover(  # type: ignore[no-untyped-def]
    app, services, anne, rp, browser, tokens, redis_server, authsvc_log
) -> None:
    client = app.test_client()
    wrong = {"activation_code": "AAAA-BBBB-CCCC-DDDD", "matricule": ANNE}
    # Redis up: the limits count (in Redis), and a person signs in
    assert client.post("/api/activation", json=wrong).json["error"] == "invalid_activation"
    b = browser()
    token = full_sign_in(b, rp, anne, tokens)
    assert any(k for k in _keys(redis_server.url))

    redis_server.kill()

    # sign-in: password and card, activation start: 503, never served unlimited
    _, challenge = pkce()
    other = browser()
    flow_id = other.flow_of(
        other.authorize(rp, code_challenge=challenge, code_challenge_method="S256")
    )
    response, elapsed = timed(lambda: other.login_password(flow_id, anne))
    assert_fails_closed(response, elapsed)
    response, elapsed = timed(lambda: other.login_card(flow_id, anne.card))
    assert_fails_closed(response, elapsed)
    response, elapsed = timed(lambda: client.post("/api/activation", json=wrong))
    assert_fails_closed(response, elapsed)
    assert "rate-limit storage (AUTHSVC_RATELIMIT_STORAGE) unreachable" in log_text(authsvc_log)
    assert "limits fail closed" in log_text(authsvc_log)

    # what needs no limit keeps working: discovery, keys, health, a session already open (SSO),
    # the token endpoint, refresh, userinfo
    assert client.get("/.well-known/openid-configuration").status_code == 200
    assert client.get("/jwks.json").status_code == 200
    assert client.get("/healthz").status_code == 200
    again = full_sign_in(b, rp, anne, tokens)  # b's session: no sign-in needed
    assert again["access_token"]
    assert tokens.refresh(rp, token["refresh_token"]).status_code == 200
    assert tokens.userinfo(again["access_token"]).status_code == 200

    # Redis back (empty: it kept nothing): the limits work again, by themselves
    redis_server.start()
    flow_id = other.flow_of(
        other.authorize(rp, code_challenge=challenge, code_challenge_method="S256")
    )
    assert other.login_password(flow_id, anne).status_code == 200
    assert client.post("/api/activation", json=wrong).json["error"] == "invalid_activation"


def test_the_per_matricule_backoff_fails_closed(redis_server: RedisServer) -> None:
    throttle = FailureThrottle(redis_server.url, prefix="login-matricule", key_prefix="t")
    for _ in range(4):
        throttle.hit(ANNE)
    assert throttle.wait(ANNE) > 0
    redis_server.kill()
    for call in (throttle.wait, throttle.hit, throttle.clear):
        started = time.monotonic()
        with pytest.raises(StorageError):
            call(ANNE)
        assert time.monotonic() - started < BOUND


def test_a_hung_redis_costs_a_bounded_wait(  # type: ignore[no-untyped-def]
    settings, services, anne, rp, browser
) -> None:
    """Redis accepts connections and never answers: 503 after the 1 s timeouts, not a hang."""
    from dataclasses import replace

    from authsvc import create_app

    silent = SilentServer()
    try:
        hung = replace(settings, ratelimit_storage=f"redis://127.0.0.1:{silent.port}/0")
        services.settings = hung
        app = create_app(hung, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)
        response, elapsed = timed(
            lambda: app.test_client().post(
                "/api/activation", json={"activation_code": "x" * 16, "matricule": ANNE}
            )
        )
        assert_fails_closed(response, elapsed)
    finally:
        silent.close()


def _keys(url: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        return list(client.scan_iter(match="*authsvc*"))
    finally:
        client.close()
