"""Helpdesk fixtures: the oidc fixtures (people, relying services, browsers), a staff member."""

from __future__ import annotations

from ..oidc.conftest import (  # noqa: F401 - fixtures re-exported
    Browser,
    Person,
    RegisteredClient,
    Tokens,
    anne,
    browser,
    directory,
    env,
    jean,
    new_client,
    rp,
    tokens,
)
