"""Reading JSON requests strictly (INTERFACE §4 "Flows API", SECURITY "Bad input").

Malformed JSON, a body that is not an object, a missing field or one of the wrong type or size is
a 400 with ``{"error": "invalid_request", "error_description": …}``; a body over 64 KiB is a 413
(see :mod:`authsvc.web.errors`). Nothing of the input is echoed back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import Response, jsonify, request

from ..errors import FlowError, InvalidInput

MAX_STRING = 4096
#: how deep arrays and objects may nest in a request body; the API's deepest is 2 (auth_token)
MAX_DEPTH = 32


def too_deep(value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (an iterative walk)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Any
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads(raw: bytes) -> Any:
    """Parse a JSON body: ``ValueError`` for anything that is not JSON we take, including
    nesting that a recursive parser cannot follow (``RecursionError``) or deeper than
    :data:`MAX_DEPTH`."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("The request body is not UTF-8.") from None
    except RecursionError:
        raise ValueError("The request body nests arrays or objects too deeply.") from None
    except ValueError:
        raise ValueError("The request body is not valid JSON.") from None
    if too_deep(data):
        raise ValueError("The request body nests arrays or objects too deeply.")
    return data


def json_object() -> dict[str, Any]:
    """The request body as a JSON object."""
    if request.mimetype != "application/json":
        raise InvalidInput("The request body must be JSON (Content-Type: application/json).")
    try:
        data = loads(request.get_data(cache=True))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if not isinstance(data, dict):
        raise InvalidInput("The request body must be a JSON object.")
    return data


def string(data: Mapping[str, Any], name: str, *, max_length: int = MAX_STRING) -> str:
    value = data.get(name)
    if value is None:
        raise InvalidInput(f"The field {name!r} is missing.")
    if not isinstance(value, str):
        raise InvalidInput(f"The field {name!r} must be a string.")
    if len(value) > max_length:
        raise InvalidInput(f"The field {name!r} is longer than {max_length} characters.")
    if "\x00" in value:
        raise InvalidInput(f"The field {name!r} contains a NUL character.")
    return value


def obj(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        raise InvalidInput(f"The field {name!r} is missing.")
    if not isinstance(value, dict):
        raise InvalidInput(f"The field {name!r} must be a JSON object.")
    return value


def respond(payload: Mapping[str, Any], status: int = 200) -> Response:
    response = jsonify(payload)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def flow_error(exc: FlowError) -> Response:
    """The JSON answer of a flows API's error: ``error``, ``error_description``, ``reason`` when
    there is one, and ``Retry-After`` with a 429."""
    body: dict[str, Any] = {"error": exc.code, "error_description": exc.description}
    if exc.reason:
        body["reason"] = exc.reason
    response = respond(body, exc.status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response
