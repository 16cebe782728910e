"""One current signing key per algorithm (a partial unique index).

Two instances making the first keys at the same moment, or two rotations at once, could each
insert a current key; key creation now also takes an advisory lock on PostgreSQL.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CURRENT = "retired_at IS NULL"


def upgrade() -> None:
    # an earlier race may have left several current keys: keep the newest of each algorithm
    op.execute(
        """
        UPDATE signing_keys SET retired_at = created_at
        WHERE retired_at IS NULL AND created_at < (
            SELECT max(k.created_at) FROM signing_keys k
            WHERE k.alg = signing_keys.alg AND k.retired_at IS NULL
        )
        """
    )
    op.create_index(
        "uq_signing_keys_current",
        "signing_keys",
        ["alg"],
        unique=True,
        postgresql_where=sa.text(CURRENT),
        sqlite_where=sa.text(CURRENT),
    )


def downgrade() -> None:
    op.drop_index("uq_signing_keys_current", "signing_keys")
