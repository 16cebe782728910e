"""Activation flows, bound smartcards, and the outbox.

- ``activation_flows``: one person's way through the activation steps (state machine in
  ``authsvc/activation/states.py``), bound to a browser by the keyed hash of a cookie secret.
- ``cards``: smartcards bound to accounts; a certificate is bound once (unique issuer + serial,
  unique fingerprint).
- ``outbox``: mails (and later back-channel logouts) written with the change that causes them,
  delivered by workers with retries; payloads encrypted at rest, erased once delivered.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authsvc.db import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("summary", sa.String(length=300), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("abandoned_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(op.f("ix_outbox_delivered_at"), "outbox", ["delivered_at"])
    op.create_index(op.f("ix_outbox_next_attempt_at"), "outbox", ["next_attempt_at"])

    op.create_table(
        "activation_flows",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("letter_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=40), nullable=False),
        sa.Column("binding_hash", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("lang", sa.String(length=8), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("email_code_hash", sa.String(length=64), nullable=True),
        sa.Column("email_code_expires_at", UTCDateTime(), nullable=True),
        sa.Column("email_code_attempts", sa.Integer(), nullable=False),
        sa.Column("email_codes_sent", sa.Integer(), nullable=False),
        sa.Column("email_code_sent_at", UTCDateTime(), nullable=True),
        sa.Column("email_verified_at", UTCDateTime(), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_activation_flows_account_id_accounts"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["letter_id"],
            ["activation_letters.id"],
            name=op.f("fk_activation_flows_letter_id_activation_letters"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activation_flows")),
    )
    op.create_index(op.f("ix_activation_flows_account_id"), "activation_flows", ["account_id"])
    op.create_index(op.f("ix_activation_flows_letter_id"), "activation_flows", ["letter_id"])

    op.create_table(
        "cards",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("not_after", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("bound_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_reason", sa.String(length=32), nullable=True),
        sa.CheckConstraint("status IN ('active', 'revoked')", name=op.f("ck_cards_status")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_cards_account_id_accounts"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cards")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_cards_fingerprint")),
        sa.UniqueConstraint("issuer", "serial", name="uq_cards_issuer_serial"),
    )
    op.create_index(op.f("ix_cards_account_id"), "cards", ["account_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_cards_account_id"), "cards")
    op.drop_table("cards")
    op.drop_index(op.f("ix_activation_flows_letter_id"), "activation_flows")
    op.drop_index(op.f("ix_activation_flows_account_id"), "activation_flows")
    op.drop_table("activation_flows")
    op.drop_index(op.f("ix_outbox_next_attempt_at"), "outbox")
    op.drop_index(op.f("ix_outbox_delivered_at"), "outbox")
    op.drop_table("outbox")
