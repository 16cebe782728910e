"""What authsvc counts and times, for Prometheus (docs/operations.md "Monitoring").

The metrics live in prometheus_client's default registry. Services record through the small
functions below — one line at each call site — and those functions never raise: a metric that
cannot be recorded must not fail the sign-in it counts. Every label takes its value from a small,
fixed set (anything else becomes ``other``): never a path, an id, a matricule, a client id or a
URL, so that the number of series stays bounded and no personal data reaches the monitoring.

With several gunicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` (set before the processes start) makes
prometheus_client keep the values in files there, and ``/metrics`` adds up every worker's
(authsvc/web/metrics.py). This module does not touch Flask.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter, Histogram, disable_created_metrics

log = logging.getLogger("authsvc.metrics")

P = ParamSpec("P")
R = TypeVar("R")

OTHER = "other"

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SIGN_IN_METHODS = frozenset({"password", "smartcard"})
SIGN_IN_RESULTS = frozenset({"success", "failure", "locked", "limited"})
GRANT_TYPES = frozenset({"authorization_code", "refresh_token", "client_credentials"})
REVOCATION_SOURCES = frozenset({"crl", "ocsp"})
# no ``*_created`` series: they double the series for nothing a dashboard uses, and the
# multiprocess mode has none (both modes then show the same)
disable_created_metrics()  # type: ignore[no-untyped-call]

#: a card refusal reason is a code of authsvc/pki/errors.py (Reason): short, lowercase
_REASON = re.compile(r"[a-z_]{1,40}")

HTTP_REQUESTS = Counter(
    "authsvc_http_requests",
    "HTTP requests answered, by endpoint (the Flask rule, or <unmatched>), method and "
    "status class.",
    ["endpoint", "method", "status"],
)
HTTP_DURATION = Histogram(
    "authsvc_http_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint (the Flask rule) and method.",
    ["endpoint", "method"],
)
SIGN_INS = Counter(
    "authsvc_sign_ins",
    "Sign-in attempts by method (password, smartcard) and result "
    "(success, failure, locked, limited).",
    ["method", "result"],
)
TOKENS_ISSUED = Counter(
    "authsvc_tokens_issued",
    "Token responses issued at the token endpoint, by grant type.",
    ["grant_type"],
)
CARD_REFUSALS = Counter(
    "authsvc_card_refusals",
    "Smartcards refused, by reason (the codes of docs/smartcard.md).",
    ["reason"],
)
REVOCATION_CHECKS = Counter(
    "authsvc_revocation_checks",
    "Card revocation checks by source (crl, ocsp) and result "
    "(good, revoked, unavailable: the card is refused, error).",
    ["source", "result"],
)
REVOCATION_CHECK_DURATION = Histogram(
    "authsvc_revocation_check_duration_seconds",
    "Time of a card revocation check (a cached CRL answers in microseconds), by source.",
    ["source"],
)
REVOCATION_FETCHES = Counter(
    "authsvc_revocation_fetches",
    "Fetches of a CRL or OCSP answer (network and verification), by source and result "
    "(ok, failed).",
    ["source", "result"],
)
REVOCATION_FETCH_DURATION = Histogram(
    "authsvc_revocation_fetch_duration_seconds",
    "Time to fetch and verify a CRL or an OCSP answer, by source.",
    ["source"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def _one_of(value: object, allowed: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in allowed else OTHER


def _quietly(record: Callable[P, None]) -> Callable[P, None]:
    """A metric that cannot be recorded (e.g. a full disk in multiprocess mode) is logged."""

    @functools.wraps(record)
    def safe(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception:
            log.warning("metrics: cannot record %s", record.__name__, exc_info=True)

    return safe


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


#: (endpoint, method, status) → the labelled children of :data:`HTTP_REQUESTS` and
#: :data:`HTTP_DURATION`, resolved once each (``labels()`` takes a lock and checks its labels at
#: every call: a few microseconds of every request). Bounded: endpoints are Flask rules, methods
#: and statuses come from small sets.
_HTTP_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_HTTP_CHILDREN_MAX = 10_000


@_quietly
def http_request(endpoint: str, method: str, status: int, seconds: float | None) -> None:
    """An HTTP request answered (the web layer calls this for every request); ``seconds``
    None: counted, not timed."""
    key = (endpoint, _one_of(method, HTTP_METHODS), status)
    children = _HTTP_CHILDREN.get(key)
    if children is None:
        children = (
            HTTP_REQUESTS.labels(endpoint, key[1], status_class(status)),
            HTTP_DURATION.labels(endpoint, key[1]),
        )
        if len(_HTTP_CHILDREN) >= _HTTP_CHILDREN_MAX:
            _HTTP_CHILDREN.clear()
        _HTTP_CHILDREN[key] = children
    children[0].inc()
    if seconds is not None:
        children[1].observe(seconds)


@_quietly
def sign_in(method: str, result: str) -> None:
    """A sign-in attempt: ``method`` password or smartcard; ``result`` success, failure, locked
    (the account is locked) or limited (too many attempts: 429)."""
    SIGN_INS.labels(_one_of(method, SIGN_IN_METHODS), _one_of(result, SIGN_IN_RESULTS)).inc()


def sign_in_failed(method: str, account: object | None) -> None:
    """A refused sign-in: ``locked`` when the account is (now) locked, ``failure`` otherwise."""
    sign_in(method, "locked" if getattr(account, "status", None) == "locked" else "failure")


@_quietly
def tokens_issued(grant_type: object) -> None:
    """A token response issued (``Provider.save_token``)."""
    TOKENS_ISSUED.labels(_one_of(grant_type, GRANT_TYPES)).inc()


@_quietly
def card_refused(reason: str) -> None:
    """A smartcard refused (``authsvc.pki.errors.refuse``)."""
    CARD_REFUSALS.labels(reason if _REASON.fullmatch(reason) else OTHER).inc()


def _check_result(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if reason in ("revoked_crl", "revoked_ocsp"):
        return "revoked"
    if reason == "revocation_unavailable":
        return "unavailable"
    return "error"


@_quietly
def _revocation_check(source: str, result: str, seconds: float) -> None:
    source = _one_of(source, REVOCATION_SOURCES)
    REVOCATION_CHECKS.labels(source, result).inc()
    REVOCATION_CHECK_DURATION.labels(source).observe(seconds)


@_quietly
def _revocation_fetch(source: str, result: str, seconds: float) -> None:
    source = _one_of(source, REVOCATION_SOURCES)
    REVOCATION_FETCHES.labels(source, result).inc()
    REVOCATION_FETCH_DURATION.labels(source).observe(seconds)


def revocation_check(source: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorates a revocation ``check``: counts its result (returned: ``good``; refused as
    revoked: ``revoked``; refused as unavailable: ``unavailable``) and times it."""

    def decorate(check: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(check)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            result = "error"
            try:
                value = check(*args, **kwargs)
                result = "good"
                return value
            except BaseException as exc:
                result = _check_result(exc)
                raise
            finally:
                _revocation_check(source, result, time.perf_counter() - started)

        return timed

    return decorate


def revocation_fetch(source: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorates the fetch of a CRL or an OCSP answer: ``ok`` when it returns, ``failed`` when
    it raises; timed either way."""

    def decorate(fetch: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fetch)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            result = "failed"
            try:
                value = fetch(*args, **kwargs)
                result = "ok"
                return value
            finally:
                _revocation_fetch(source, result, time.perf_counter() - started)

        return timed

    return decorate
