"""Security headers on every response (SECURITY "Web")."""

from __future__ import annotations

from flask import Flask, Response

from . import services


def content_security_policy(card_agent_origin: str) -> str:
    """No inline script or style; scripts may talk to this origin and to the card agent only."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' {card_agent_origin}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def security_headers(card_agent_origin: str, is_https: bool) -> list[tuple[str, str]]:
    """The security headers every response carries, in the order they are sent (with
    ``Cache-Control: no-store`` unless the view set one): the Flask path (:func:`init_app`) and
    the fast path (authsvc/web/fast.py) both send these."""
    headers = [
        ("Content-Security-Policy", content_security_policy(card_agent_origin)),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        # popups we open (the card agent's PIN window) keep their link to the page
        ("Cross-Origin-Opener-Policy", "same-origin-allow-popups"),
    ]
    if is_https:
        headers.append(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))
    return headers


NO_STORE = ("Cache-Control", "no-store")


def init_app(app: Flask) -> None:
    #: the security headers in the order they are sent, ``Cache-Control: no-store`` among them
    #: (before HSTS), each with its name in lower case: built at the first response
    prepared: list[tuple[str, tuple[str, str]]] = []

    @app.after_request
    def _security_headers(response: Response) -> Response:
        if not prepared:
            settings = services().settings
            every = security_headers(settings.card_agent_url, settings.is_https)
            hsts = [h for h in every if h[0] == "Strict-Transport-Security"]
            ordered = [*(h for h in every if h not in hsts), NO_STORE, *hsts]
            prepared.extend((name.lower(), (name, value)) for name, value in ordered)
        headers = response.headers
        # each one the view did not set itself, in one pass over the response's few headers
        present = {name.lower() for name in headers.keys()}  # noqa: SIM118 - Headers' own keys()
        headers.extend([header for name, header in prepared if name not in present])
        return response
