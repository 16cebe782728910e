"""Smartcards: challenges and the helpdesk's list of revoked card certificates.

``smartcard_challenges`` holds the single-use, 5-minute challenges of the smartcard steps
(SECURITY "Smartcard"); a flow's current challenge is its newest (largest ``id``), which is why the
key is an increasing integer. ``revoked_cards`` is the helpdesk's own revocation list, one row per
certificate (issuer in RFC 4514, serial in lowercase hex).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authsvc.db import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "smartcard_challenges",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(44), nullable=False),
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("consumed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smartcard_challenges")),
    )
    op.create_index(op.f("ix_smartcard_challenges_flow_id"), "smartcard_challenges", ["flow_id"])
    op.create_index(
        op.f("ix_smartcard_challenges_expires_at"), "smartcard_challenges", ["expires_at"]
    )

    op.create_table(
        "revoked_cards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.String(1024), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("revoked_by", sa.String(200), nullable=False),
        sa.CheckConstraint(
            "reason IN ('lost', 'stolen', 'damaged', 'other')",
            name=op.f("ck_revoked_cards_reason"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revoked_cards")),
        sa.UniqueConstraint("issuer", "serial", name="uq_revoked_cards_issuer_serial"),
    )


def downgrade() -> None:
    op.drop_table("revoked_cards")
    op.drop_index(op.f("ix_smartcard_challenges_expires_at"), "smartcard_challenges")
    op.drop_index(op.f("ix_smartcard_challenges_flow_id"), "smartcard_challenges")
    op.drop_table("smartcard_challenges")
