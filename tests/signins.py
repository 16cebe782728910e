"""Password sign-ins straight through ``Login.password``, as ``POST /api/login/<flow>/password``
calls it (tests/oidc/test_password_signin_units.py, tests/functional/test_password_signin.py)."""

from __future__ import annotations

from authsvc.app import Services
from authsvc.login.service import SignedIn
from authsvc.oidc.claims import ACR_LOW

#: where the sign-ins of these helpers come from (what their audit events and sessions record)
IP = "192.0.2.7"
USER_AGENT = "test agent"


def start(
    services: Services, *, acr: str = ACR_LOW, page: str | None = None
) -> tuple[str, str, str]:
    """A sign-in flow, as the authorization endpoint (or, with ``page``, one of the provider's own
    pages) starts it: its id, the browser's binding and the CSRF token."""
    with services.db.transaction() as db:
        if page is not None:
            started = services.login.start_for_page(db, return_to=page, required_acr=acr, lang="en")
        else:
            started = services.login.start(
                db,
                client_id="rp",
                request={"client_id": "rp", "response_type": "code", "scope": "openid"},
                required_acr=acr,
                login_hint=None,
                lang="en",
            )
        return started.flow.id, started.binding, started.flow.csrf_token


def password(
    services: Services,
    flow: tuple[str, str, str],
    number: str,
    secret: str,
    *,
    cookie: str | None = None,
) -> SignedIn:
    """The password step of ``flow`` for the matricule ``number``."""
    return services.login.password(
        *flow, number, secret, previous_cookie=cookie, ip=IP, user_agent=USER_AGENT
    )
