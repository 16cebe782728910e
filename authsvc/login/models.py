"""A sign-in flow: the authorization request waiting for the person to authenticate."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base


class LoginFlow(Base):
    __tablename__ = "login_flows"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    binding_hash: Mapped[str] = mapped_column(String(64))
    csrf_token: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(64))
    #: the authorization request, as received, to resume once the person has authenticated
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: http://eidas.europa.eu/LoA/high when a full session is required
    required_acr: Mapped[str] = mapped_column(String(64))
    login_hint: Mapped[str | None] = mapped_column(String(32))
    lang: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    #: set when the person authenticated in this flow: the authorization request may continue
    authenticated_at: Mapped[datetime | None]
    account_id: Mapped[uuid.UUID | None]
    completed_at: Mapped[datetime | None]
