"""Eight exchanges racing on one code (SECURITY "Nothing lost, nothing half-done"): exactly one
exchange gets tokens; the others are replays, refused with invalid_grant, and revoke what the
winner was issued (RFC 9700 §4.1). On PostgreSQL the code is burned by the statement that finds
it; on SQLite the exchanges read it side by side and its burn, guarded (still unused), is the first
of the writes they make afterwards, one transaction at a time (oidc/server.py, views._deferred)."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import func, select

from authsvc.oidc.models import TokenFamily

from .conftest import Tokens, pkce


def test_one_code_racing_exchanges_exactly_one_wins(browser, anne, rp, app, services) -> None:  # type: ignore[no-untyped-def]
    verifier, challenge = pkce()
    cb = browser().sign_in(rp, anne, code_challenge=challenge, code_challenge_method="S256")
    with services.db.read_transaction() as s:
        families = s.scalar(select(func.count()).select_from(TokenFamily))
    start = threading.Barrier(8)
    answers: list[Any] = []

    def exchange() -> None:
        tokens = Tokens(app.test_client())
        start.wait(10)
        response = tokens.exchange(rp, cb["code"], verifier)
        answers.append((response.status_code, response.json))

    threads = [threading.Thread(target=exchange) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    winners = [body for status, body in answers if status == 200]
    losers = [body for status, body in answers if status != 200]
    assert len(winners) == 1, answers
    assert len(losers) == 7 and all(body["error"] == "invalid_grant" for body in losers), losers
    with services.db.read_transaction() as s:
        assert s.scalar(select(func.count()).select_from(TokenFamily)) == families + 1
        family = s.scalars(select(TokenFamily).order_by(TokenFamily.created_at.desc())).first()
        # the losers came after the winner had committed: replays, which revoked its family
        assert family is not None and family.revoked_at is not None
    tokens = Tokens(app.test_client())
    assert tokens.introspect(rp, winners[0]["access_token"]) == {"active": False}
