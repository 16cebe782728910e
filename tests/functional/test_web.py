"""The web layer: /healthz, JSON errors, security headers."""

from __future__ import annotations

from authsvc import migrate


def test_healthz(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "schema": migrate.head_revision()}


def test_healthz_when_the_schema_is_behind(client, db) -> None:  # type: ignore[no-untyped-def]
    migrate.downgrade(db.engine, "base")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "authsvc db upgrade" in response.json["database"]


def test_healthz_when_the_database_is_unreachable(tmp_path, settings, clock) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from authsvc import create_app
    from authsvc.app import Services

    bad = dataclasses.replace(
        settings, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"
    )
    services = Services.from_settings(bad, clock=clock)
    app = create_app(bad, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)
    response = app.test_client().get("/healthz")
    services.close()
    assert response.status_code == 503
    assert response.json["database"] == "unreachable"


def test_unknown_path_is_a_json_404(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    assert response.json["error_description"]


def test_wrong_method_is_a_json_405(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response.json["error"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_oversized_body_is_a_json_413(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/healthz", data=b"x" * (64 * 1024 + 1))
    assert response.status_code == 413
    assert response.json["error"] == "request_too_large"


def test_security_headers(client) -> None:  # type: ignore[no-untyped-def]
    headers = client.get("/healthz").headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in headers  # http issuer


def test_hsts_when_the_issuer_is_https(settings, services) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from authsvc import create_app

    https = dataclasses.replace(settings, issuer="https://id.example.lu")
    services.settings = https
    app = create_app(https, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)
    headers = app.test_client().get("/healthz").headers
    assert headers["Strict-Transport-Security"].startswith("max-age=")


def test_unexpected_errors_reveal_nothing(app) -> None:  # type: ignore[no-untyped-def]
    @app.get("/boom")
    def boom():  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internals")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.json == {
        "error": "server_error",
        "error_description": "An unexpected error occurred.",
    }


def test_a_view_keeps_the_headers_it_set_and_gets_the_others(app) -> None:  # type: ignore[no-untyped-def]
    from flask import Response

    @app.get("/own-headers")
    def own():  # type: ignore[no-untyped-def]
        response = Response("{}", mimetype="application/json")
        response.headers["Cache-Control"] = "public, max-age=60"
        response.headers["x-frame-options"] = "SAMEORIGIN"  # any case: it is the same header
        return response

    headers = app.test_client().get("/own-headers").headers
    assert headers["Cache-Control"] == "public, max-age=60"
    assert headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert headers.getlist("Cache-Control") == ["public, max-age=60"]
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_hsts_comes_after_cache_control(settings, services) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from authsvc import create_app

    https = dataclasses.replace(settings, issuer="https://id.example.lu")
    services.settings = https
    app = create_app(https, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)
    names = [name for name, _ in app.test_client().get("/healthz").headers]
    assert names.index("Cache-Control") < names.index("Strict-Transport-Security")
    assert len(names) == len(set(names))


def test_no_flask_session_is_opened_or_written(app, authsvc_log) -> None:  # type: ignore[no-untyped-def]
    """authsvc's sessions are its own (authsvc/sessions/): Flask's cookie session is never read
    or set, and writing to it fails loudly instead of setting a cookie."""
    from flask import session

    seen: list[bool] = []

    @app.get("/peek-session")
    def peek():  # type: ignore[no-untyped-def]
        seen.append(session.__class__.__name__ == "NullSession")
        return "{}"

    @app.get("/write-session")
    def write():  # type: ignore[no-untyped-def]
        session["x"] = "y"
        return "{}"

    client = app.test_client()
    client.set_cookie("session", "anything")
    response = client.get("/peek-session")
    assert response.status_code == 200 and seen == [True]
    assert "Set-Cookie" not in response.headers
    refused = app.test_client().get("/write-session")  # the null session refuses: a 500
    assert refused.status_code == 500 and "Set-Cookie" not in refused.headers
    assert any("session is unavailable" in str(r.exc_info[1]) for r in authsvc_log if r.exc_info)


def test_an_async_view_is_refused_when_the_app_is_built(app) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from authsvc.web.application import check_sync

    check_sync(app)  # authsvc's own: all plain functions

    @app.get("/async")
    async def later():  # type: ignore[no-untyped-def]
        return "{}"

    with pytest.raises(TypeError, match="no async views"):
        check_sync(app)


def test_an_async_view_behind_a_decorator_is_refused_too(app) -> None:  # type: ignore[no-untyped-def]
    import functools

    import pytest

    from authsvc.web.application import check_sync

    def decorated(view):  # type: ignore[no-untyped-def]
        @functools.wraps(view)
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            return view(*args, **kwargs)

        return wrapper

    @app.get("/async-decorated")
    @decorated
    async def later():  # type: ignore[no-untyped-def]
        return "{}"

    with pytest.raises(TypeError, match="no async views"):
        check_sync(app)


def test_limiter_settings_only_its_hooks_would_act_on_are_refused(settings, services) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from authsvc import create_app
    from authsvc.errors import ConfigError

    for setting in ("RATELIMIT_DEFAULT", "RATELIMIT_HEADERS_ENABLED"):
        with pytest.raises(ConfigError, match=setting):
            create_app(
                settings,
                TESTING=True,
                SERVICES=services,
                AUTHSVC_OUTBOX_WORKER=False,
                **{setting: "1 per second" if setting == "RATELIMIT_DEFAULT" else True},
            )


def test_the_limiter_runs_no_hook_of_its_own_on_each_request(app) -> None:  # type: ignore[no-untyped-def]
    """Its limits are the routes' own decorators (a 429 is still answered: tests/*/test_*limit*);
    its before, after and teardown hooks had nothing to do on any request (no default limits, no
    ``deduct_when``, no rate-limit headers) and are not registered."""
    import functools

    limiter = app.extensions["authsvc_limiter"]
    for registry in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
        for hooks in registry.values():
            for hook in hooks:
                assert getattr(hook, "__self__", None) is not limiter
                assert not (isinstance(hook, functools.partial) and limiter in hook.args)
                target = getattr(hook, "func", hook)
                assert not getattr(target, "__module__", "").startswith("flask_limiter")
