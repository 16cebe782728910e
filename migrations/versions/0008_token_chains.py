"""Audit chains 1-7 for issued tokens.

One chain head locked from an append to its commit ordered every token issued on every instance
behind the previous one. Token events now go to one of seven further chains (chosen at random per
event), each with its own head; everything else stays on chain 0. ``authsvc audit verify`` walks
every chain and expects all eight heads. Heads are never removed (the triggers of 0001 refuse it),
so the downgrade leaves them: an older release verifies them like chain 0.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64
NEW_CHAINS = range(1, 8)


def upgrade() -> None:
    heads = sa.table(
        "audit_chain_heads",
        sa.column("chain", sa.SmallInteger()),
        sa.column("seq", sa.BigInteger()),
        sa.column("hash", sa.String(64)),
    )
    existing = {row[0] for row in op.get_bind().execute(sa.select(heads.c.chain))}
    rows = [{"chain": c, "seq": 0, "hash": GENESIS_HASH} for c in NEW_CHAINS if c not in existing]
    if rows:
        op.bulk_insert(heads, rows)


def downgrade() -> None:
    pass  # heads are never removed (triggers of 0001); an older release verifies them too
