"""Logout: RP-initiated (with and without id_token_hint) and back-channel, delivered to a real
receiver on loopback through the outbox, retried while it is down."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from ..mailserver import free_port
from .conftest import full_sign_in, pkce

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class Receiver:
    """A relying service's back-channel logout endpoint on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.tokens: list[str] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/backchannel-logout"

    def start(self) -> None:
        received = self.tokens

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                received.append(form["logout_token"][0])
                self.send_response(200)
                self.send_header("Cache-Control", "no-store")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(free_port())
    yield r
    r.stop()


@pytest.fixture
def dsp(new_client, receiver):  # type: ignore[no-untyped-def]
    return new_client(
        name="DSP",
        post_logout_redirect_uris=["https://rp.example.test/bye"],
        backchannel_logout_uri=receiver.uri,
    )


def verify_logout_token(app, token: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    keys = KeySet.import_key_set(app.test_client().get("/jwks.json").json)
    decoded = jwt.decode(token, keys, algorithms=["ES256", "RS256"])
    assert decoded.header["typ"] == "logout+jwt"
    return dict(decoded.claims)


def test_rp_initiated_logout_with_id_token_hint(
    browser, anne, dsp, tokens, receiver, services, app
) -> None:  # type: ignore[no-untyped-def]
    receiver.start()
    b = browser()
    token = full_sign_in(b, dsp, anne, tokens)
    response = b.client.get(
        "/logout?"
        + urllib.parse.urlencode(
            {
                "id_token_hint": token["id_token"],
                "post_logout_redirect_uri": "https://rp.example.test/bye",
                "state": "st-9",
            }
        )
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "https://rp.example.test/bye?state=st-9"
    # the session is over: its tokens with it, and the next authorization asks to sign in
    assert tokens.refresh(dsp, token["refresh_token"]).json["error"] == "invalid_grant"
    assert tokens.introspect(dsp, token["access_token"])["active"] is False
    _, challenge = pkce()
    again = b.authorize(dsp, code_challenge=challenge, code_challenge_method="S256")
    assert again.headers["Location"].startswith("/login?flow=")
    # and the relying service is told, by back-channel
    assert services.outbox.deliver_due().delivered == 1
    (logout_token,) = receiver.tokens
    claims = verify_logout_token(app, logout_token)
    id_token = verify_logout_token_free(token["id_token"])
    assert claims["iss"] == "http://127.0.0.1:5000"
    assert claims["aud"] == dsp.client_id
    assert claims["sub"] == id_token["sub"]
    assert claims["sid"] == id_token["sid"]
    assert claims["events"] == {BACKCHANNEL_EVENT: {}}
    assert "nonce" not in claims
    assert {"iat", "exp", "jti"} <= set(claims)


def verify_logout_token_free(token: str) -> dict[str, Any]:
    from .conftest import claims_of

    return claims_of(token)


def test_backchannel_logout_is_retried_while_the_receiver_is_down(
    browser, anne, dsp, tokens, receiver, services, clock
) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    token = full_sign_in(b, dsp, anne, tokens)
    b.client.get("/logout?" + urllib.parse.urlencode({"id_token_hint": token["id_token"]}))
    first = services.outbox.deliver_due()
    assert first.failed == 1  # the receiver is down
    clock.advance(seconds=31)
    assert services.outbox.deliver_due().failed == 1  # still down: tried again within 30 s
    receiver.start()
    clock.advance(minutes=2)
    assert services.outbox.deliver_due().delivered == 1
    assert len(receiver.tokens) == 1


def test_logout_without_a_hint_asks_first(browser, anne, dsp, tokens) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    token = full_sign_in(b, dsp, anne, tokens)
    page = b.client.get(
        "/logout?"
        + urllib.parse.urlencode(
            {"client_id": dsp.client_id, "post_logout_redirect_uri": "https://rp.example.test/bye"}
        )
    )
    assert page.status_code == 200
    assert b"csrf_token" in page.data
    # nothing ended yet
    assert tokens.introspect(dsp, token["access_token"])["active"] is True
    # a forged POST without the page's token does not sign out
    forged = b.client.post("/logout", data={"client_id": dsp.client_id})
    assert forged.status_code == 200
    assert tokens.introspect(dsp, token["access_token"])["active"] is True
    import re

    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
    done = b.client.post("/logout", data={"csrf_token": csrf, "client_id": dsp.client_id})
    assert done.status_code == 200  # no redirect without a valid id_token_hint
    assert tokens.introspect(dsp, token["access_token"])["active"] is False


def test_unregistered_post_logout_uri_is_not_redirected_to(browser, anne, dsp, tokens) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    token = full_sign_in(b, dsp, anne, tokens)
    response = b.client.get(
        "/logout?"
        + urllib.parse.urlencode(
            {
                "id_token_hint": token["id_token"],
                "post_logout_redirect_uri": "https://evil.example/",
            }
        )
    )
    assert response.status_code == 200
    assert "Location" not in response.headers


def test_garbage_id_token_hint_is_refused_without_redirect(browser) -> None:  # type: ignore[no-untyped-def]
    response = browser().client.get(
        "/logout?id_token_hint=abc.def.ghi&post_logout_redirect_uri=https://evil.example/"
    )
    assert 400 <= response.status_code < 500
    assert "Location" not in response.headers


def test_somebody_elses_id_token_does_not_sign_this_browser_out(
    browser, anne, jean, dsp, tokens
) -> None:  # type: ignore[no-untyped-def]
    """Logout CSRF: a page makes Anne's browser open /logout with an ID token of Jean's (the
    attacker's own). The hint names another session: Anne is asked, and nothing ends meanwhile."""
    attacker = full_sign_in(browser(), dsp, jean, tokens)
    victim = browser()
    token = full_sign_in(victim, dsp, anne, tokens)
    response = victim.client.get(
        "/logout?"
        + urllib.parse.urlencode(
            {
                "id_token_hint": attacker["id_token"],
                "post_logout_redirect_uri": "https://rp.example.test/bye",
                "state": "s",
            }
        )
    )
    assert response.status_code == 200  # the confirmation page, not a redirect
    assert b"csrf_token" in response.data
    assert tokens.introspect(dsp, token["access_token"])["active"] is True
    assert tokens.introspect(dsp, attacker["access_token"])["active"] is True


def test_a_hint_without_the_cookie_ends_no_session(browser, anne, dsp, tokens) -> None:  # type: ignore[no-untyped-def]
    """Whoever holds an ID token (a log, a resource server) cannot end its session from
    elsewhere: only the browser's own session is ever ended."""
    token = full_sign_in(browser(), dsp, anne, tokens)
    elsewhere = browser()
    response = elsewhere.client.get(
        "/logout?" + urllib.parse.urlencode({"id_token_hint": token["id_token"]})
    )
    assert response.status_code == 200
    assert tokens.introspect(dsp, token["access_token"])["active"] is True


def test_an_access_token_is_not_an_id_token_hint(browser, anne, dsp, tokens) -> None:  # type: ignore[no-untyped-def]
    b = browser()
    token = full_sign_in(b, dsp, anne, tokens)
    response = b.client.get(
        "/logout?"
        + urllib.parse.urlencode(
            {
                "id_token_hint": token["access_token"],
                "post_logout_redirect_uri": "https://rp.example.test/bye",
            }
        )
    )
    assert 400 <= response.status_code < 500
    assert "Location" not in response.headers
    assert tokens.introspect(dsp, token["access_token"])["active"] is True
