"""A provider session and the relying services that took part in it."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base


class ProviderSession(Base):
    """A browser's session at the provider.

    ``id`` is the OpenID Connect ``sid``. The browser holds a random secret in the session cookie;
    only its keyed hash is here, and it is replaced at every sign-in and step-up (no fixation).
    The *full* level lasts until ``full_until`` (``AUTHSVC_FULL_LEVEL_MAX_AGE`` after the card was
    presented); after that the session is limited again until the card is presented again.
    """

    __tablename__ = "provider_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cookie_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    #: the methods of the authentications in this session (RFC 8176): pwd, sc, hwk, pin
    amr: Mapped[list[str]] = mapped_column(JSON)
    #: when the person last authenticated (OIDC auth_time)
    auth_time: Mapped[datetime]
    #: the full level (card) lasts until then; None: never presented in this session
    full_until: Mapped[datetime | None]
    #: the card that opened or stepped up the session
    card_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("cards.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    #: the session ends at the latest then (AUTHSVC_SESSION_MAX_AGE)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    ip: Mapped[str | None] = mapped_column(String(64))


class SessionClient(Base):
    """A relying service that received tokens from a session (told at logout)."""

    __tablename__ = "session_clients"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("provider_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(
        ForeignKey("clients.client_id", ondelete="CASCADE"), primary_key=True
    )
    first_at: Mapped[datetime]
