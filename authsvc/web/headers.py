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


def init_app(app: Flask) -> None:
    #: the security headers, and those of them sent after ``Cache-Control`` (HSTS)
    prepared: list[tuple[list[tuple[str, str]], list[tuple[str, str]]]] = []

    @app.after_request
    def _security_headers(response: Response) -> Response:
        if not prepared:
            settings = services().settings
            every = security_headers(settings.card_agent_url, settings.is_https)
            last = [h for h in every if h[0] == "Strict-Transport-Security"]
            prepared.append(([h for h in every if h not in last], last))
        first, last = prepared[0]
        headers = response.headers
        for name, value in first:
            headers.setdefault(name, value)
        if "Cache-Control" not in headers:
            headers["Cache-Control"] = "no-store"
        for name, value in last:
            headers.setdefault(name, value)
        return response
