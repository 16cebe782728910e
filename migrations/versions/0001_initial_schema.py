"""Initial schema: directory, accounts, activation letters, audit trail.

The audit trail is append-only at the database level too (triggers, on SQLite and PostgreSQL):
events are never updated, deleted or truncated; an event is appended only right after its chain's
head; a head only advances, by one, to the event that follows it. The head of chain 0 starts at
the genesis hash.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authsvc.db import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64
OPEN_LETTER = "used_at IS NULL AND superseded_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "professionals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("matricule", sa.String(13), nullable=False),
        sa.Column("given_name", sa.String(200), nullable=False),
        sa.Column("family_name", sa.String(200), nullable=False),
        sa.Column("profession", sa.String(100), nullable=False),
        sa.Column("provider_code", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("left_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("status IN ('listed', 'left')", name=op.f("ck_professionals_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_professionals")),
        sa.UniqueConstraint("matricule", name=op.f("uq_professionals_matricule")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("professional_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("email_verified_at", UTCDateTime(), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
        sa.Column("status_changed_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'active', 'locked', 'suspended')",
            name=op.f("ck_accounts_status"),
        ),
        sa.ForeignKeyConstraint(
            ["professional_id"],
            ["professionals.id"],
            name=op.f("fk_accounts_professional_id_professionals"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("professional_id", name=op.f("uq_accounts_professional_id")),
        sa.UniqueConstraint("subject", name=op.f("uq_accounts_subject")),
    )
    op.create_table(
        "activation_letters",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("professional_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("superseded_at", UTCDateTime(), nullable=True),
        sa.Column("issued_by", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(
            ["professional_id"],
            ["professionals.id"],
            name=op.f("fk_activation_letters_professional_id_professionals"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activation_letters")),
    )
    op.create_index(
        op.f("ix_activation_letters_professional_id"), "activation_letters", ["professional_id"]
    )
    op.create_index(
        "uq_activation_letters_open_per_professional",
        "activation_letters",
        ["professional_id"],
        unique=True,
        postgresql_where=sa.text(OPEN_LETTER),
        sqlite_where=sa.text(OPEN_LETTER),
    )

    op.create_table(
        "audit_chain_heads",
        sa.Column("chain", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_chain_heads")),
    )
    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("chain", sa.SmallInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("chain", "seq", name="uq_audit_events_chain_seq"),
    )
    op.create_index(op.f("ix_audit_events_occurred_at"), "audit_events", ["occurred_at"])
    op.create_index(op.f("ix_audit_events_subject"), "audit_events", ["subject"])
    op.create_index(op.f("ix_audit_events_tag"), "audit_events", ["tag"])
    op.bulk_insert(
        sa.table(
            "audit_chain_heads",
            sa.column("chain", sa.SmallInteger()),
            sa.column("seq", sa.BigInteger()),
            sa.column("hash", sa.String()),
        ),
        [{"chain": 0, "seq": 0, "hash": GENESIS_HASH}],
    )
    _append_only_triggers()


# The rules of the audit trail, enforced by the database itself for anyone who bypasses authsvc:
# events are never changed or removed; an event is appended only right after its chain's head;
# the head only advances, one event at a time, to an event that exists; heads are never removed.
PG_TRIGGERS = [
    """
    CREATE FUNCTION audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit trail is append-only (% on % refused)', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$
    """,
    """
    CREATE FUNCTION audit_event_appended() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        head audit_chain_heads%ROWTYPE;
    BEGIN
        SELECT * INTO head FROM audit_chain_heads WHERE chain = NEW.chain;
        IF NOT FOUND OR NEW.seq <> head.seq + 1 OR NEW.prev_hash <> head.hash THEN
            RAISE EXCEPTION 'audit events are appended right after the head of their chain'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END;
    $$
    """,
    """
    CREATE FUNCTION audit_head_advanced() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.chain <> OLD.chain OR NEW.seq <> OLD.seq + 1 OR NOT EXISTS (
            SELECT 1 FROM audit_events
            WHERE chain = NEW.chain AND seq = NEW.seq AND hash = NEW.hash AND prev_hash = OLD.hash
        ) THEN
            RAISE EXCEPTION 'an audit chain head only advances to its next event'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END;
    $$
    """,
    """CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
       FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
       FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()""",
    """CREATE TRIGGER audit_events_in_order BEFORE INSERT ON audit_events
       FOR EACH ROW EXECUTE FUNCTION audit_event_appended()""",
    """CREATE TRIGGER audit_heads_advance BEFORE UPDATE ON audit_chain_heads
       FOR EACH ROW EXECUTE FUNCTION audit_head_advanced()""",
    """CREATE TRIGGER audit_heads_kept BEFORE DELETE ON audit_chain_heads
       FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_chain_heads
       FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()""",
]

SQLITE_TRIGGERS = [
    """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only (UPDATE refused)'); END""",
    """CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only (DELETE refused)'); END""",
    # (INSERT OR REPLACE removes rows without firing DELETE triggers: the insert rule stops it,
    # since a replacing row would have to come right after the head, where no row exists.)
    """CREATE TRIGGER audit_events_in_order BEFORE INSERT ON audit_events
       WHEN NOT EXISTS (
           SELECT 1 FROM audit_chain_heads
           WHERE chain = NEW.chain AND seq + 1 = NEW.seq AND hash = NEW.prev_hash
       )
       BEGIN
           SELECT RAISE(ABORT, 'audit events are appended right after the head of their chain');
       END""",
    """CREATE TRIGGER audit_heads_advance BEFORE UPDATE ON audit_chain_heads
       WHEN NEW.chain <> OLD.chain OR NEW.seq <> OLD.seq + 1 OR NOT EXISTS (
           SELECT 1 FROM audit_events
           WHERE chain = NEW.chain AND seq = NEW.seq AND hash = NEW.hash AND prev_hash = OLD.hash
       )
       BEGIN SELECT RAISE(ABORT, 'an audit chain head only advances to its next event'); END""",
    """CREATE TRIGGER audit_heads_kept BEFORE DELETE ON audit_chain_heads
       BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only (DELETE refused)'); END""",
    """CREATE TRIGGER audit_heads_insert BEFORE INSERT ON audit_chain_heads
       WHEN EXISTS (SELECT 1 FROM audit_chain_heads WHERE chain = NEW.chain)
       BEGIN SELECT RAISE(ABORT, 'an audit chain head is never replaced'); END""",
]


def _append_only_triggers() -> None:
    statements = PG_TRIGGERS if op.get_bind().dialect.name == "postgresql" else SQLITE_TRIGGERS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    # dropping the tables drops their triggers
    op.drop_table("audit_events")
    op.drop_table("audit_chain_heads")
    if op.get_bind().dialect.name == "postgresql":
        for function in ("audit_refuse", "audit_event_appended", "audit_head_advanced"):
            op.execute(f"DROP FUNCTION {function}()")
    op.drop_index("uq_activation_letters_open_per_professional", "activation_letters")
    op.drop_index(op.f("ix_activation_letters_professional_id"), "activation_letters")
    op.drop_table("activation_letters")
    op.drop_table("accounts")
    op.drop_table("professionals")
