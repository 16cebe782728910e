"""Discovery and JWKS answered before Flask: a WSGI middleware around the application.

``GET`` and ``HEAD`` of ``/.well-known/openid-configuration`` and ``/jwks.json`` are the most
frequent requests a provider gets (every relying service and resource server fetches them) and
the cheapest: prepared bytes and their ETag (``Provider.discovery_json``, ``KeyStore.jwks()``).
Through Flask each costs ~0.3 ms of CPU — request context, routing, the hooks of every request
(limits, metrics, request id, headers) — for ~1 µs of work. This middleware answers them directly
with exactly the response the Flask views give (authsvc/oidc/views.py ``cached_json``, then the
hooks of authsvc/web/: ``ETag``, ``Cache-Control: public, max-age=…``,
``Access-Control-Allow-Origin: *``, the security headers, ``X-Request-Id``), ``304`` when
``If-None-Match`` names the ETag (weak or strong) or is ``*``, and counts them in the same
Prometheus metrics (endpoint = the Flask rule, method, status class, duration).

Everything else goes to Flask, unchanged: other paths and methods (a ``POST`` gets Flask's
``405``), a request with a body (Flask refuses one over the limit with ``413``), and any request
for which the prepared answer cannot be had (the key store cannot reload its keys: Flask then
answers with its error handling, ``503`` when the database is down). The Flask routes stay: they
document the endpoints and serve whoever calls the Flask application below this middleware.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.http import parse_etags

from .. import metrics as recorded
from .headers import security_headers
from .request_id import HEADER as REQUEST_ID_HEADER
from .request_id import request_id_of

if TYPE_CHECKING:
    from ..app import Services

log = logging.getLogger("authsvc.web")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks.json"
METHODS = frozenset({"GET", "HEAD"})
#: the environ key of ``time.perf_counter()`` when the request reached this middleware (the web
#: layer's metrics time every request from it: authsvc/web/metrics.py)
STARTED = "authsvc.started"


class _Prepared:
    """One endpoint's answer for one ETag: the body and the headers of its 200 and its 304."""

    __slots__ = ("body", "etag", "not_modified", "ok", "tag")

    def __init__(self, body: bytes, etag: str, max_age: int, security: list[tuple[str, str]]):
        self.body = body
        self.etag = etag
        self.tag = etag.strip('"')
        common = [
            ("ETag", etag),
            ("Cache-Control", f"public, max-age={max_age}"),
            ("Access-Control-Allow-Origin", "*"),
            *security,
        ]
        self.ok = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *common,
        ]
        self.not_modified = common


class _Endpoint:
    __slots__ = ("current", "label", "max_age", "source")

    def __init__(self, label: str, source: Callable[[], tuple[bytes, str]], max_age: int):
        self.label = label  # the Flask rule: the metrics' endpoint label
        self.source = source
        self.max_age = max_age
        self.current: _Prepared | None = None


class FastPath:
    """WSGI middleware: discovery and JWKS from their prepared bytes; the rest to ``inner``."""

    def __init__(
        self,
        inner: WSGIApp,
        services: Services,
        *,
        on_first_request: Callable[[], None] | None = None,
    ) -> None:
        from ..oidc.keys import JWKS_MAX_AGE
        from ..oidc.views import DISCOVERY_MAX_AGE

        self.inner = inner
        provider = services.oidc
        self._security = security_headers(
            services.settings.card_agent_url, services.settings.is_https
        )
        self._endpoints = {
            DISCOVERY_PATH: _Endpoint(
                DISCOVERY_PATH,
                lambda: (provider.discovery_json, provider.discovery_etag),
                DISCOVERY_MAX_AGE,
            ),
            JWKS_PATH: _Endpoint(JWKS_PATH, lambda: services.keys.jwks(), JWKS_MAX_AGE),
        }
        self._first = on_first_request

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        endpoint = self._endpoints.get(environ.get("PATH_INFO", ""))
        method = environ.get("REQUEST_METHOD", "")
        if (
            endpoint is None
            or method not in METHODS
            or environ.get("CONTENT_LENGTH", "") not in ("", "0")
            or "HTTP_TRANSFER_ENCODING" in environ
        ):
            environ[STARTED] = started  # the Flask path's metrics time the request from here
            return self.inner(environ, start_response)
        if self._first is not None:
            first, self._first = self._first, None
            first()
        try:
            prepared = self._prepared(endpoint)
        except Exception:  # Flask answers it, with its error handling and logging
            environ[STARTED] = started
            return self.inner(environ, start_response)
        condition = environ.get("HTTP_IF_NONE_MATCH")
        if condition and parse_etags(condition).contains_weak(prepared.tag):
            status, headers, body = "304 Not Modified", prepared.not_modified, b""
        else:
            status, headers = "200 OK", prepared.ok
            body = b"" if method == "HEAD" else prepared.body
        request_id = request_id_of(environ.get("HTTP_X_REQUEST_ID"))
        start_response(status, [*headers, (REQUEST_ID_HEADER, request_id)])
        recorded.http_request(
            endpoint.label, method, int(status[:3]), time.perf_counter() - started
        )
        return [body]

    def _prepared(self, endpoint: _Endpoint) -> _Prepared:
        body, etag = endpoint.source()
        prepared = endpoint.current
        if prepared is None or prepared.etag != etag or prepared.body is not body:
            prepared = _Prepared(body, etag, endpoint.max_age, self._security)
            endpoint.current = prepared
        return prepared


__all__ = ["DISCOVERY_PATH", "JWKS_PATH", "STARTED", "FastPath"]
