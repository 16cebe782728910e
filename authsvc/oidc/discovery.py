"""OpenID Provider Metadata (OpenID Connect Discovery 1.0, RFC 8414), as INTERFACE §3 lists it."""

from __future__ import annotations

from typing import Any

from ..web.i18n import LANGUAGES
from .claims import ACR_VALUES, CLAIMS_SUPPORTED
from .clients import ASSERTION_ALGORITHMS, AUTH_METHODS, BASE_SCOPES, EXTRA_SCOPES


def metadata(issuer: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks.json",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "end_session_endpoint": f"{issuer}/logout",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "userinfo_signing_alg_values_supported": ["none"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        "introspection_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": [*BASE_SCOPES, *EXTRA_SCOPES],
        "claims_supported": list(CLAIMS_SUPPORTED),
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "acr_values_supported": list(ACR_VALUES),
        "prompt_values_supported": ["none", "login"],
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "ui_locales_supported": list(LANGUAGES),
    }
