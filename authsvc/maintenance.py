"""Purging what has served its purpose (docs/operations.md "Housekeeping").

Rows that only ever matter until they expire are deleted a day after (:data:`RETENTION`): the day
leaves time to investigate an incident while they are still there. Delivered and abandoned outbox
messages (their payload already erased) are kept :data:`OUTBOX_RETENTION` for the operator.

====================== ===========================================================================
table                  purged
====================== ===========================================================================
activation_flows       expired, or completed, more than a day ago
smartcard_challenges   expired more than a day ago (a consumed one expires 5 minutes after issue)
authorization_codes    expired more than a day ago (used or not)
access_tokens          expired more than a day ago (introspection says "inactive" either way)
used_client_assertions expired more than a day ago (an expired assertion is refused anyway)
login_flows            expired more than a day ago
outbox                 delivered or abandoned more than 30 days ago
====================== ===========================================================================

The audit trail is never purged. Each table is purged in batches of :data:`BATCH` rows, each batch
its own short transaction, so that a large backlog does not hold locks for long. Several processes
may purge at once: deleting is idempotent.

:func:`purge` runs about once an hour in every serving process (the outbox worker's thread calls
it) and on demand with ``authsvc purge``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, delete, or_, select

from .activation.flows import ActivationFlow
from .login.models import LoginFlow
from .oidc.models import AccessToken, AuthorizationCode, UsedAssertion
from .outbox.models import OutboxMessage
from .pki.challenges import purge_challenges

if TYPE_CHECKING:
    from .app import Services

log = logging.getLogger("authsvc.maintenance")

#: how long rows are kept after they expired or were finished
RETENTION = timedelta(days=1)
#: how long delivered and abandoned outbox messages are kept
OUTBOX_RETENTION = timedelta(days=30)
#: rows deleted per transaction
BATCH = 1000


def _targets(now: datetime) -> list[tuple[str, Any, Callable[[], ColumnElement[bool]]]]:
    """``(table name, primary-key column, condition)`` of everything :func:`purge` deletes."""
    cutoff = now - RETENTION
    outbox_cutoff = now - OUTBOX_RETENTION
    return [
        (
            "activation_flows",
            ActivationFlow.id,
            lambda: or_(ActivationFlow.expires_at < cutoff, ActivationFlow.completed_at < cutoff),
        ),
        (
            "authorization_codes",
            AuthorizationCode.code_hash,
            lambda: AuthorizationCode.expires_at < cutoff,
        ),
        ("access_tokens", AccessToken.jti, lambda: AccessToken.expires_at < cutoff),
        ("used_client_assertions", UsedAssertion.id, lambda: UsedAssertion.expires_at < cutoff),
        ("login_flows", LoginFlow.id, lambda: LoginFlow.expires_at < cutoff),
        (
            "outbox",
            OutboxMessage.id,
            lambda: or_(
                OutboxMessage.delivered_at < outbox_cutoff,
                OutboxMessage.abandoned_at < outbox_cutoff,
            ),
        ),
    ]


def purge(services: Services, *, batch: int = BATCH) -> dict[str, int]:
    """Delete what is past its retention; return how many rows of each table went."""
    now = services.clock.now()
    counts: dict[str, int] = {}
    with services.db.transaction() as session:
        counts["smartcard_challenges"] = purge_challenges(
            session, services.clock, retention=RETENTION
        )
    for name, key, condition in _targets(now):
        total = 0
        while True:
            with services.db.transaction() as session:
                ids = list(session.scalars(select(key).where(condition()).limit(batch)))
                if ids:
                    session.execute(
                        delete(key.class_)
                        .where(key.in_(ids))
                        .execution_options(synchronize_session=False)
                    )
            total += len(ids)
            if len(ids) < batch:
                break
        counts[name] = total
    if any(counts.values()):
        log.info(
            "purged %s",
            ", ".join(f"{count} {name}" for name, count in counts.items() if count),
        )
    return counts
