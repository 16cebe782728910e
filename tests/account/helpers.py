"""Signing a browser in and calling the account API as its page does."""

from __future__ import annotations

from typing import Any

from ..oidc.conftest import Browser, Person, RegisteredClient


def sign_in(b: Browser, rp: RegisteredClient, person: Person, method: str = "password") -> Browser:
    from ..oidc.conftest import pkce

    _, challenge = pkce()
    cb = b.sign_in(
        rp, person, method=method, code_challenge=challenge, code_challenge_method="S256"
    )
    assert "code" in cb, cb
    return b


def csrf(b: Browser) -> str:
    response = b.client.get("/api/account")
    assert response.status_code == 200, response.json
    return str(response.json["csrf_token"])


def sessions(b: Browser) -> list[dict[str, Any]]:
    response = b.client.get("/api/account/sessions")
    assert response.status_code == 200, response.json
    return list(response.json["sessions"])


def current_sid(b: Browser) -> str:
    return str(b.client.get("/api/account").json["session"]["sid"])


def end(b: Browser, sid: str, token: str | None = None) -> Any:
    return b.client.post(f"/api/account/sessions/{sid}/end", json={"csrf_token": token or csrf(b)})


def change_password(b: Browser, new: str, current: str | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {"csrf_token": csrf(b), "new_password": new, **extra}
    if current is not None:
        body["current_password"] = current
    return b.client.post("/api/account/password", json=body)


def assert_json_error(response: Any, status: int, error: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.mimetype == "application/json"
    body = response.json
    assert isinstance(body["error"], str) and isinstance(body["error_description"], str)
    if error is not None:
        assert body["error"] == error, body
    assert "Traceback" not in response.get_data(as_text=True)
