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
