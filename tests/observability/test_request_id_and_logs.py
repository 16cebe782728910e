"""A request id on every response and in every log line of the request; JSON logs that parse; and
never a traceback in an answer."""

from __future__ import annotations

import json
import logging
import re

import pytest

from authsvc import create_app, logs
from authsvc.web.request_id import HEADER

GENERATED = re.compile(r"[0-9a-f]{32}")


def json_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


@pytest.fixture
def json_app(settings, services):  # type: ignore[no-untyped-def]
    """An instance logging JSON, with two extra pages: one that logs, one that fails."""
    import dataclasses

    json_settings = dataclasses.replace(settings, log_format="json")
    app = create_app(json_settings, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)
    log = logging.getLogger("authsvc.test")

    def noisy() -> str:
        log.info("doing something", extra={"step": 2})
        log.warning("and a warning")
        return "ok"

    def broken() -> str:
        log.info("about to fail")
        raise RuntimeError("the secret detail 4242 that no user may see")

    app.add_url_rule("/test/noisy", view_func=noisy)
    app.add_url_rule("/test/broken", view_func=broken)
    return app


# --- the header ----------------------------------------------------------------------------------


def test_a_sane_request_id_goes_through(client) -> None:  # type: ignore[no-untyped-def]
    for given in ("abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "a.b_c-D9", "x" * 64):
        response = client.get("/healthz", headers={HEADER: given})
        assert response.headers[HEADER] == given


def test_a_request_id_is_made_when_none_is_given(client) -> None:  # type: ignore[no-untyped-def]
    first = client.get("/healthz").headers[HEADER]
    second = client.get("/no/such/page").headers[HEADER]
    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(
    "given",
    ["x" * 65, "two words", "a;b", "ünïcode", "id\tin\ttabs", "${jndi:ldap://x}", "", "../etc"],
)
def test_an_insane_request_id_is_replaced(client, given: str) -> None:  # type: ignore[no-untyped-def]
    answered = client.get("/healthz", headers={HEADER: given}).headers[HEADER]
    assert answered != given
    assert GENERATED.fullmatch(answered)


def test_errors_carry_the_request_id_too(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/token", data=b"\xff", headers={HEADER: "err-1"})
    assert response.status_code >= 400
    assert response.headers[HEADER] == "err-1"


# --- in the logs ---------------------------------------------------------------------------------


def test_json_log_lines_carry_the_request_id(json_app, capsys) -> None:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    response = json_app.test_client().get("/test/noisy", headers={HEADER: "trace-42"})
    assert response.status_code == 200
    lines = json_lines(capsys.readouterr().err)
    mine = [line for line in lines if line["logger"] == "authsvc.test"]
    assert [line["message"] for line in mine] == ["doing something", "and a warning"]
    assert {line["request_id"] for line in lines} == {"trace-42"}
    first = mine[0]
    assert set(first) >= {"time", "level", "logger", "message", "request_id"}
    assert first["level"] == "INFO"
    assert first["step"] == 2  # extra= fields are kept
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["time"]))
    assert "exception" not in first


def test_an_unexpected_error_logs_its_traceback_and_answers_none(json_app, capsys) -> None:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    response = json_app.test_client().get("/test/broken")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert response.json == {
        "error": "server_error",
        "error_description": "An unexpected error occurred.",
    }
    assert "Traceback" not in body and "4242" not in body and "RuntimeError" not in body
    request_id = response.headers[HEADER]

    lines = json_lines(capsys.readouterr().err)
    (error,) = [line for line in lines if line["level"] == "ERROR"]
    assert error["request_id"] == request_id
    assert error["exception"] == "RuntimeError"
    assert "Traceback (most recent call last)" in str(error["traceback"])
    assert "4242" in str(error["traceback"])  # for the operator, in the log
    assert all(line["request_id"] == request_id for line in lines)


def test_records_outside_a_request_have_no_request_id(json_app, capsys) -> None:  # type: ignore[no-untyped-def]
    json_app.test_client().get("/test/noisy", headers={HEADER: "before"})
    capsys.readouterr()
    assert logs.request_id.get() is None  # forgotten when the request ended
    logging.getLogger("authsvc.test").warning("a line with\na line break")
    (line,) = json_lines(capsys.readouterr().err)
    assert line["request_id"] is None
    assert line["message"] == "a line with\na line break"  # still one line of JSON


def test_json_logs_are_one_object_per_line_even_for_tracebacks(json_app, capsys) -> None:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    json_app.test_client().get("/test/broken")
    err = capsys.readouterr().err
    for line in err.splitlines():
        assert isinstance(json.loads(line), dict)


def test_text_logs_keep_their_format(app, capsys) -> None:  # type: ignore[no-untyped-def]
    """The default: today's ``time LEVEL logger: message``, one line per record."""
    logs.configure(None, "text")
    capsys.readouterr()
    logging.getLogger("authsvc.test").warning("plain and simple")
    err = capsys.readouterr().err
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING authsvc\.test: plain and simple\n", err
    ), err


def test_records_carry_the_request_id_as_an_attribute(app, authsvc_log) -> None:  # type: ignore[no-untyped-def]
    """For any handler or formatter an operator adds (``%(request_id)s``)."""
    log = logging.getLogger("authsvc.test")

    def page() -> str:
        log.info("inside")
        return "ok"

    app.add_url_rule("/test/page", view_func=page)
    app.test_client().get("/test/page", headers={HEADER: "attr-7"})
    (record,) = [r for r in authsvc_log if r.getMessage() == "inside"]
    assert record.__dict__["request_id"] == "attr-7"
