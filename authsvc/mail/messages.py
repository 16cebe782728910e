"""The mails authsvc sends, in the person's language: a text part and an HTML part.

The text part of the verification mail always holds the line ``Verification code: NNNNNN``
(INTERFACE §4), whatever the language, so that people and programs find it alike.
"""

from __future__ import annotations

from html import escape
from typing import Any

from ..web.i18n import gettext


def _html(lang: str, paragraphs: list[str], code: str | None = None) -> str:
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    if code:
        body += (
            '<p style="font-size:24px;font-weight:bold;letter-spacing:4px;'
            f'font-family:monospace">{escape(code)}</p>'
        )
    return (
        f'<!doctype html><html lang="{escape(lang)}"><head><meta charset="utf-8"></head>'
        f'<body style="font-family:sans-serif;line-height:1.5">{body}</body></html>'
    )


def verification_code(*, to: str, name: str, code: str, lang: str) -> dict[str, Any]:
    greeting = gettext(lang, "mail.verify.greeting", name=name)
    body = gettext(lang, "mail.verify.body")
    code_line = f"Verification code: {code}"
    expiry = gettext(lang, "mail.verify.expiry")
    signature = gettext(lang, "mail.signature")
    text = f"{greeting}\n\n{body}\n\n{code_line}\n\n{expiry}\n\n-- \n{signature}\n"
    return {
        "to": to,
        "subject": gettext(lang, "mail.verify.subject"),
        "lang": lang,
        "text": text,
        "html": _html(lang, [greeting, body, code_line, expiry, signature]),
    }


def account_activated(*, to: str, name: str, date: str, card: str, lang: str) -> dict[str, Any]:
    greeting = gettext(lang, "mail.verify.greeting", name=name)
    body = gettext(lang, "mail.activated.body", date=date, card=card)
    signature = gettext(lang, "mail.signature")
    return {
        "to": to,
        "subject": gettext(lang, "mail.activated.subject"),
        "lang": lang,
        "text": f"{greeting}\n\n{body}\n\n-- \n{signature}\n",
        "html": _html(lang, [greeting, body, signature]),
    }
