"""Bad input on every activation endpoint: a 4xx JSON error, never a 500 (SECURITY "Bad input").

Hypothesis throws arbitrary bytes, arbitrary JSON and well-shaped bodies with arbitrary values at
each endpoint, with and without a real flow behind the id.
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = {
    "": ["activation_code", "matricule"],
    "/email": ["csrf_token", "email"],
    "/email/verify": ["csrf_token", "code"],
    "/password": ["csrf_token", "password"],
    "/smartcard": ["csrf_token", "auth_token"],
}
STEPS = list(FIELDS)


def assert_clean_error(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code < 500, (response.status_code, response.data[:300])
    assert response.mimetype == "application/json"
    if response.status_code >= 400:
        body = response.json
        assert isinstance(body["error"], str) and isinstance(body["error_description"], str)
        assert "Traceback" not in response.get_data(as_text=True)


@pytest.fixture
def flow(activation, letter):  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    return a


def url(flow, step: str, real: bool) -> str:  # type: ignore[no-untyped-def]
    if step == "":
        return "/api/activation"
    return (flow.url if real else "/api/activation/nope") + step


common = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
LIMIT = 64 * 1024
_addresses = itertools.count(1)


def another_address() -> str:
    """A new client address for each request, so that the per-IP limits are not what answers."""
    n = next(_addresses)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def nested(kind: str, depth: int, inner: str = "1") -> str:
    """``[[[…1…]]]`` or ``{"a":{"a":…1…}}``, ``depth`` levels deep."""
    if kind == "list":
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


#: JSON nested deep enough to exhaust a recursive parser (30 000 levels fit in 64 KiB), or just
#: over and under the provider's own limit of nesting
deep_json = st.builds(
    nested,
    st.sampled_from(["list", "object"]),
    st.one_of(st.integers(1, 40), st.integers(900, 1100), st.integers(20000, 32000)),
)


@st.composite
def deep_bodies(draw: st.DrawFn, step: str) -> str:
    """A deep value alone, or as the value of one of the step's fields beside sane ones."""
    value = draw(deep_json)
    if draw(st.booleans()):
        return value
    fields = {name: '"x"' for name in FIELDS[step]}
    fields[draw(st.sampled_from(FIELDS[step]))] = value
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}"


@common
@given(step=st.sampled_from(STEPS), real=st.booleans(), body=st.binary(max_size=300))
def test_arbitrary_bytes(flow, step: str, real: bool, body: bytes) -> None:  # type: ignore[no-untyped-def]
    response = flow.client.post(url(flow, step, real), data=body, content_type="application/json")
    assert_clean_error(response)
    assert response.status_code >= 400


@common
@given(step=st.sampled_from(STEPS), real=st.booleans(), body=json_values)
def test_arbitrary_json(flow, step: str, real: bool, body: object) -> None:  # type: ignore[no-untyped-def]
    response = flow.client.post(
        url(flow, step, real), data=json.dumps(body), content_type="application/json"
    )
    assert_clean_error(response)


@common
@given(step=st.sampled_from(STEPS), real=st.booleans(), data=st.data())
def test_right_fields_wrong_values(flow, step: str, real: bool, data) -> None:  # type: ignore[no-untyped-def]
    body = {name: data.draw(json_values, label=name) for name in FIELDS[step]}
    if data.draw(st.booleans(), label="real csrf") and "csrf_token" in body:
        body["csrf_token"] = flow.flow["csrf_token"]
    response = flow.client.post(url(flow, step, real), json=body)
    assert_clean_error(response)


@common
@given(step=st.sampled_from(STEPS), real=st.booleans(), data=st.data())
def test_deeply_nested_json(flow, step: str, real: bool, data) -> None:  # type: ignore[no-untyped-def]
    """Nesting a recursive parser cannot follow is a 400, never a 500 (RecursionError)."""
    body = data.draw(deep_bodies(step), label="body")
    response = flow.client.post(
        url(flow, step, real),
        data=body,
        content_type="application/json",
        environ_overrides={"REMOTE_ADDR": another_address()},  # past the per-IP limits
    )
    assert_clean_error(response)
    depth = body.count("[") + body.count("{")
    if len(body.encode()) > LIMIT:
        assert response.status_code == 413
    elif depth > 64:
        assert response.status_code == 400, response.json
        assert response.json["error"] == "invalid_request"


@common
@given(
    step=st.sampled_from(STEPS),
    real=st.booleans(),
    size=st.integers(LIMIT - 64, LIMIT + 64),
    deep=st.booleans(),
)
def test_bodies_near_the_64_kib_limit(flow, step: str, real: bool, size: int, deep: bool) -> None:  # type: ignore[no-untyped-def]
    """Up to 64 KiB the body is read and answered with a 4xx; one byte more is a 413."""
    if deep:  # as deep as the size allows
        depth = (size - 1) // 2
        body = ("[" * depth + "1" + "]" * depth).encode()
        body += b" " * (size - len(body))
    else:
        head = json.dumps({name: "" for name in FIELDS[step]})[:-1] + ', "pad": "'
        body = (head + "a" * (size - len(head) - 2) + '"}').encode()
    assert len(body) == size
    response = flow.client.post(
        url(flow, step, real),
        data=body,
        content_type="application/json",
        environ_overrides={"REMOTE_ADDR": another_address()},
    )
    assert_clean_error(response)
    if size > LIMIT:
        assert response.status_code == 413
        assert response.json["error"] == "request_too_large"
    else:
        assert response.status_code in (400, 403, 404, 409, 429), response.json


@pytest.mark.parametrize("step", STEPS)
def test_not_json_missing_fields_and_oversized(flow, step: str) -> None:  # type: ignore[no-untyped-def]
    target = url(flow, step, True)
    cases = [
        flow.client.post(
            target, data="activation_code=x", content_type="application/x-www-form-urlencoded"
        ),
        flow.client.post(target, data=b"\xff\xfe{", content_type="application/json"),
        flow.client.post(target, json=[]),
        flow.client.post(target, json={}),
        flow.client.post(target, json={name: 12345 for name in FIELDS[step]}),
    ]
    for response in cases:
        assert_clean_error(response)
        assert response.status_code in (400, 403, 409, 429), response.json
    big = flow.client.post(
        target, data=b'{"x": "' + b"a" * 70000 + b'"}', content_type="application/json"
    )
    assert big.status_code == 413
    assert big.json["error"] == "request_too_large"


def test_per_ip_limit_answers_429_with_retry_after(activation) -> None:  # type: ignore[no-untyped-def]
    from datetime import date

    from authsvc import matricule

    a = activation()
    # a different matricule each time: the per-matricule count is not what is tested here
    numbers = [matricule.make(date(1960, 1, 1 + i), 100 + i) for i in range(13)]
    statuses = [a.start("AAAA-BBBB-CCCC-DDDD", numbers[i]).status_code for i in range(12)]
    assert statuses[:10] == [400] * 10
    limited = a.start("AAAA-BBBB-CCCC-DDDD", numbers[12])
    assert limited.status_code == 429
    assert limited.json["error"] == "too_many_requests"
    assert int(limited.headers["Retry-After"]) > 0
