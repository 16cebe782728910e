"""Logout: RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) and back-channel logout
(OpenID Connect Back-Channel Logout 1.0).

When a session ends, :meth:`authsvc.sessions.service.Sessions.end` queues one message per relying
service that took part in it and registered a ``backchannel_logout_uri``; :class:`BackchannelLogout`
delivers each from the outbox: a logout token signed at delivery time (so that it is fresh however
late the delivery), POSTed as ``logout_token``, retried until the service answers 2xx.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from flask import g, request
from joserfc.jwk import KeySet

from ..security.secrets import random_token

if TYPE_CHECKING:
    from ..app import Services
    from .server import Provider

log = logging.getLogger("authsvc.logout")

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_LIFETIME = 120
TIMEOUT = 5


class BackchannelLogout:
    """The outbox handler for ``backchannel_logout`` messages."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def logout_token(self, message: Mapping[str, Any]) -> str:
        now = int(self.services.clock.now().timestamp())
        claims = {
            "iss": self.services.settings.issuer,
            "aud": message["client_id"],
            "iat": now,
            "exp": now + LOGOUT_TOKEN_LIFETIME,
            "jti": random_token(18),
            "events": {BACKCHANNEL_EVENT: {}},
            "sub": message["sub"],
            "sid": message["sid"],
        }
        return self.services.keys.sign(claims, alg=message.get("alg", "ES256"), typ="logout+jwt")

    def __call__(self, message: Mapping[str, Any]) -> None:
        body = urllib.parse.urlencode({"logout_token": self.logout_token(message)}).encode()
        post = urllib.request.Request(  # noqa: S310 - a registered https (or loopback) URI
            message["uri"],
            data=body,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(post, timeout=TIMEOUT) as response:  # noqa: S310 - registered URI
                status = response.status
        except urllib.error.HTTPError as exc:
            raise ConnectionError(f"{message['uri']} answered {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionError(f"{message['uri']}: {reason}") from None
        if not 200 <= status < 300:
            raise ConnectionError(f"{message['uri']} answered {status}")


def make_end_session_endpoint(provider: Provider) -> type:
    class EndSession(EndSessionEndpoint):  # type: ignore[misc]
        def get_server_jwks(self) -> KeySet:
            return provider.services.keys.key_set()

        def get_algorithms(self) -> list[str]:
            return ["ES256", "RS256"]

        def _validate_id_token_hint(self, id_token_hint: str) -> dict[str, Any]:
            """An ID token this provider issued to a registered client (RP-Initiated Logout §2):
            signed by one of our keys, ``typ`` JWT (an access token or a logout token is not an
            ID token), our ``iss``, one audience that is a client, a ``sid``. Its ``exp`` may
            have passed (§2: "even when the exp time has passed")."""
            try:
                claims = provider.services.keys.verify(id_token_hint, typ="JWT")
            except ValueError as exc:
                raise InvalidRequestError(f"id_token_hint: {exc}") from None
            aud = claims.get("aud")
            if (
                claims.get("iss") != provider.issuer
                or not isinstance(aud, str)
                or self.server.query_client(aud) is None
                or not isinstance(claims.get("sid"), str)
            ):
                raise InvalidRequestError("id_token_hint is not an ID token of this provider")
            return claims

        def end_session(self, end_session_request: EndSessionRequest) -> None:
            """End the browser's own session, and never another: a hint names whom the relying
            service signs out, the cookie says who is here (the view asked for confirmation when
            they differ)."""
            services = provider.services
            session = services.sessions.find(
                g.oidc_db, request.cookies.get("authsvc_session"), touch=False
            )
            if session is not None:
                client = end_session_request.client
                actor = f"client:{client.client_id}" if client is not None else "browser"
                services.sessions.end(g.oidc_db, session, "logout", actor=actor)
            g.logged_out = session is not None

    return EndSession


def needs_confirmation(validated: EndSessionRequest, own_session_id: str | None) -> bool:
    """Whether the person confirms before being signed out (RP-Initiated Logout §6): always
    without a valid ``id_token_hint``, and when the hint names another session than the browser's
    own (a page that replays somebody's ID token must not sign this person out)."""
    if validated.needs_confirmation:
        return True
    claims = validated.id_token_claims or {}
    return own_session_id is not None and claims.get("sid") != own_session_id
