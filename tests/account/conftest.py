"""The account pages reuse the provider's fixtures: an active professional ``anne`` (password and
card), ``jean``, registered relying services, a ``browser`` that signs in through the API."""

from __future__ import annotations

from ..oidc.conftest import *  # noqa: F403
