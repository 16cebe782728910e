"""Rendering the HTML pages: language, texts, and the page's data for its script."""

from __future__ import annotations

import json
from typing import Any

from flask import render_template, request
from markupsafe import Markup

from . import services
from .i18n import LANGUAGES, NAMES, catalog, gettext, negotiate


def page_language(default: str | None = None) -> str:
    """``?lang=`` if given, else ``default`` (e.g. the flow's), else the browser's."""
    if request.args.get("lang") in LANGUAGES:
        return str(request.args["lang"])
    if default in LANGUAGES:
        return str(default)
    return negotiate(request.accept_languages)


def render_page(template: str, lang: str, **context: Any) -> str:
    """A page in ``lang``; ``page_data`` goes to its script as a JSON data block."""
    svc = services()
    data = {
        "lang": lang,
        "messages": catalog(lang),
        "agent_url": svc.card_agent_url,
        **context.pop("page_data", {}),
    }
    # A JSON data block is not executed: the CSP allows it; "</" is escaped so it cannot close it.
    page_data = Markup(json.dumps(data, ensure_ascii=False).replace("</", "<\\/"))  # noqa: S704
    return render_template(
        template,
        lang=lang,
        t=lambda key, **values: gettext(lang, key, **values),
        languages=[(code, NAMES[code]) for code in LANGUAGES],
        page_data=page_data,
        issuer=svc.settings.issuer,
        **context,
    )
