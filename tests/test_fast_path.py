"""Discovery and JWKS answered before Flask (authsvc/web/fast.py): the same answers as the Flask
views give, byte for byte and header for header; everything else still goes to Flask."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError
from werkzeug.test import Client
from werkzeug.wrappers import Response

from authsvc import create_app
from authsvc.app import Services
from authsvc.config import load_settings
from authsvc.web.fast import DISCOVERY_PATH, JWKS_PATH, FastPath

from .conftest import CHEAP

PATHS = [DISCOVERY_PATH, JWKS_PATH]
HEX_ID = re.compile(r"[0-9a-f]{32}")


def fast_and_flask(app: Any) -> tuple[Client, Client]:
    """A client of the whole application (the fast path first) and one of Flask alone."""
    assert isinstance(app.wsgi_app, FastPath)
    return app.test_client(), Client(app.wsgi_app.inner, Response)


def headers_of(response: Any) -> list[tuple[str, str]]:
    """The headers in the order sent, the request id replaced by its shape."""
    out = []
    for name, value in response.headers.items():
        if name == "X-Request-Id":
            value = "<hex id>" if HEX_ID.fullmatch(value) else value
        out.append((name, value))
    return out


def same_answer(fast: Any, flask: Any) -> None:
    assert fast.status_code == flask.status_code
    assert headers_of(fast) == headers_of(flask)
    assert fast.get_data() == flask.get_data()


def counted(endpoint: str, method: str, status: str) -> float:
    labels = {"endpoint": endpoint, "method": method, "status": status}
    return REGISTRY.get_sample_value("authsvc_http_requests_total", labels) or 0.0


def timed(endpoint: str, method: str) -> float:
    labels = {"endpoint": endpoint, "method": method}
    return REGISTRY.get_sample_value("authsvc_http_request_duration_seconds_count", labels) or 0.0


@pytest.mark.parametrize("path", PATHS)
def test_get_gives_what_the_flask_view_gives(app: Any, path: str) -> None:
    fast, flask = fast_and_flask(app)
    ours, theirs = fast.get(path), flask.get(path)
    same_answer(ours, theirs)
    assert ours.status_code == 200
    assert ours.headers["Content-Type"] == "application/json"
    assert ours.headers["Content-Length"] == str(len(ours.get_data()))
    assert ours.headers["Access-Control-Allow-Origin"] == "*"
    max_age = 3600 if path == DISCOVERY_PATH else 300
    assert ours.headers["Cache-Control"] == f"public, max-age={max_age}"
    assert re.fullmatch(r'"[0-9a-f]{32}"', ours.headers["ETag"])
    for name in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"):
        assert ours.headers[name] == theirs.headers[name]
    assert HEX_ID.fullmatch(ours.headers["X-Request-Id"])
    assert ours.json == theirs.json
    if path == DISCOVERY_PATH:
        assert ours.json["jwks_uri"].endswith(JWKS_PATH)
    else:
        assert ours.json["keys"]


@pytest.mark.parametrize("path", PATHS)
def test_head_gives_the_headers_without_the_body(app: Any, path: str) -> None:
    fast, flask = fast_and_flask(app)
    ours = fast.head(path)
    same_answer(ours, flask.head(path))
    assert ours.status_code == 200
    assert ours.get_data() == b""
    assert ours.headers["Content-Length"] == str(len(fast.get(path).get_data()))


@pytest.mark.parametrize("path", PATHS)
def test_if_none_match_gives_304_as_flask_does(app: Any, path: str) -> None:
    fast, flask = fast_and_flask(app)
    etag = fast.get(path).headers["ETag"]
    # an unquoted tag is read as werkzeug reads it (leniently), on both paths
    matching = [etag, f"W/{etag}", "*", f'"0000", {etag}', f' "1111" , W/{etag} ', etag.strip('"')]
    for condition in matching:
        ours = fast.get(path, headers={"If-None-Match": condition})
        same_answer(ours, flask.get(path, headers={"If-None-Match": condition}))
        assert ours.status_code == 304, condition
        assert ours.get_data() == b""
        assert ours.headers["ETag"] == etag
        assert "Cache-Control" in ours.headers and "X-Request-Id" in ours.headers
        head = fast.head(path, headers={"If-None-Match": condition})
        assert head.status_code == 304
    for condition in ['"0000"', 'W/"0000"', f'"{etag}"', 'garbage, ,,"', "", etag[:-2] + '"']:
        ours = fast.get(path, headers={"If-None-Match": condition})
        same_answer(ours, flask.get(path, headers={"If-None-Match": condition}))
        assert ours.status_code == 200, condition


def test_the_request_id_is_kept_when_sane_and_replaced_otherwise(app: Any) -> None:
    fast, flask = fast_and_flask(app)
    for given in ["proxy-id.1_2", "x" * 64]:
        ours = fast.get(JWKS_PATH, headers={"X-Request-Id": given})
        assert ours.headers["X-Request-Id"] == given
        assert (
            flask.get(JWKS_PATH, headers={"X-Request-Id": given}).headers["X-Request-Id"] == given
        )
    for bad in ["x" * 65, "a b", "id:X-Evil", "../x", "é"]:
        ours = fast.get(DISCOVERY_PATH, headers={"X-Request-Id": bad})
        assert ours.status_code == 200
        assert HEX_ID.fullmatch(ours.headers["X-Request-Id"])
    ids = {fast.get(JWKS_PATH).headers["X-Request-Id"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("path", PATHS)
def test_other_methods_and_requests_with_a_body_go_to_flask(app: Any, path: str) -> None:
    fast, flask = fast_and_flask(app)
    for method in ("POST", "PUT", "DELETE"):
        ours = fast.open(path, method=method, data="x=1")
        same_answer(ours, flask.open(path, method=method, data="x=1"))
        assert ours.status_code == 405
        assert ours.json["error"] == "method_not_allowed"
        assert ours.headers["Cache-Control"] == "no-store"
        assert "GET" in ours.headers["Allow"]
    options = fast.open(path, method="OPTIONS")
    assert options.status_code == 200 and "GET" in options.headers["Allow"]
    # a body over the limit is refused before routing, on every path
    big = fast.open(path, method="GET", data=b"x" * (65 * 1024))
    assert big.status_code == 413
    assert big.json["error"]
    # neighbours of the paths are Flask's
    assert fast.get(path + "/").status_code == 404
    assert fast.get(path.upper()).status_code == 404
    assert fast.get(path + "?x=1").headers["ETag"] == fast.get(path).headers["ETag"]


def test_a_key_rotation_changes_the_jwks_body_and_etag(app: Any, services: Services) -> None:
    fast, flask = fast_and_flask(app)
    before = fast.get(JWKS_PATH)
    kids = services.keys.rotate(actor="test")
    after = fast.get(JWKS_PATH)
    same_answer(after, flask.get(JWKS_PATH))
    assert after.headers["ETag"] != before.headers["ETag"]
    assert after.get_data() != before.get_data()
    published = {k["kid"] for k in after.json["keys"]}
    assert set(kids) <= published
    assert {k["kid"] for k in before.json["keys"]} <= published  # the old keys stay published
    assert after.headers["Content-Length"] == str(len(after.get_data()))
    # the old ETag no longer matches; the new one does
    stale = fast.get(JWKS_PATH, headers={"If-None-Match": before.headers["ETag"]})
    assert stale.status_code == 200 and stale.get_data() == after.get_data()
    fresh = fast.get(JWKS_PATH, headers={"If-None-Match": after.headers["ETag"]})
    assert fresh.status_code == 304


def test_they_are_counted_and_timed_in_the_request_metrics(app: Any) -> None:
    fast, _ = fast_and_flask(app)
    etag = fast.get(JWKS_PATH).headers["ETag"]
    before = {
        "get": counted(JWKS_PATH, "GET", "2xx"),
        "head": counted(DISCOVERY_PATH, "HEAD", "2xx"),
        "304": counted(JWKS_PATH, "GET", "3xx"),
        "timed": timed(JWKS_PATH, "GET"),
        "post": counted("<unmatched>", "POST", "4xx") + counted(JWKS_PATH, "POST", "4xx"),
    }
    for _ in range(3):
        fast.get(JWKS_PATH)
    fast.head(DISCOVERY_PATH)
    fast.get(JWKS_PATH, headers={"If-None-Match": etag})
    fast.post(JWKS_PATH)
    assert counted(JWKS_PATH, "GET", "2xx") - before["get"] == 3
    assert counted(DISCOVERY_PATH, "HEAD", "2xx") - before["head"] == 1
    assert counted(JWKS_PATH, "GET", "3xx") - before["304"] == 1
    assert timed(JWKS_PATH, "GET") - before["timed"] == 4
    after_post = counted("<unmatched>", "POST", "4xx") + counted(JWKS_PATH, "POST", "4xx")
    assert after_post - before["post"] == 1  # counted once, by Flask


def test_when_the_keys_cannot_be_had_flask_answers(
    app: Any, services: Services, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    fast, flask = fast_and_flask(app)

    def down() -> tuple[bytes, str]:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(services.keys, "jwks", down)
    ours = fast.get(JWKS_PATH)
    assert ours.status_code == 503
    assert ours.json["error"] == "temporarily_unavailable"
    same_answer(ours, flask.get(JWKS_PATH))
    assert fast.get(DISCOVERY_PATH).status_code == 200  # needs no database


def test_https_adds_hsts_on_both_paths(env: dict[str, str]) -> None:
    settings = load_settings({**env, "AUTHSVC_ISSUER": "https://id.example.lu"})
    services = Services.from_settings(settings, argon2=CHEAP)
    try:
        app = create_app(settings, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)
        fast, flask = fast_and_flask(app)
        for path in PATHS:
            ours = fast.get(path)
            same_answer(ours, flask.get(path))
            assert ours.headers["Strict-Transport-Security"].startswith("max-age=")
        assert fast.get(DISCOVERY_PATH).json["issuer"] == "https://id.example.lu"
    finally:
        services.close()


def outbox_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "authsvc-outbox" and t.is_alive())


def test_a_first_request_on_the_fast_path_starts_the_outbox_worker(env: dict[str, str]) -> None:
    services = Services.from_settings(load_settings(env), argon2=CHEAP)
    try:
        app = create_app(load_settings(env), TESTING=True, SERVICES=services)
        running = outbox_threads()
        assert app.test_client().get(JWKS_PATH).status_code == 200
        deadline = time.monotonic() + 5
        while outbox_threads() <= running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert outbox_threads() == running + 1
    finally:
        services.close()
