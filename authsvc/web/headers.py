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


def init_app(app: Flask) -> None:
    csp: list[str] = []

    @app.after_request
    def _security_headers(response: Response) -> Response:
        if not csp:
            csp.append(content_security_policy(services().settings.card_agent_url))
        headers = response.headers
        headers.setdefault("Content-Security-Policy", csp[0])
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        # popups we open (the card agent's PIN window) keep their link to the page
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin-allow-popups")
        if "Cache-Control" not in headers:
            headers["Cache-Control"] = "no-store"
        if services().settings.is_https:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response
