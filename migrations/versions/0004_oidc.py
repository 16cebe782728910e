"""The OpenID Connect provider: relying services, signing keys, sessions, sign-in flows, codes,
token families, refresh and access tokens; brute-force counters on accounts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authsvc.db import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("token_endpoint_auth_method", sa.String(length=32), nullable=False),
        sa.Column("redirect_uris", sa.JSON(), nullable=False),
        sa.Column("post_logout_redirect_uris", sa.JSON(), nullable=False),
        sa.Column("backchannel_logout_uri", sa.String(length=2000), nullable=True),
        sa.Column("extra_scopes", sa.JSON(), nullable=False),
        sa.Column("grant_types", sa.JSON(), nullable=False),
        sa.Column("require_acr", sa.String(length=8), nullable=True),
        sa.Column("subject_type", sa.String(length=16), nullable=False),
        sa.Column("id_token_signed_response_alg", sa.String(length=8), nullable=False),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_clients")),
    )
    op.create_table(
        "login_flows",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("binding_hash", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("required_acr", sa.String(length=64), nullable=False),
        sa.Column("login_hint", sa.String(length=32), nullable=True),
        sa.Column("lang", sa.String(length=8), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("authenticated_at", UTCDateTime(), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_flows")),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("alg", sa.String(length=8), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=True),
        sa.Column("pkcs11_label", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("retired_at", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    op.create_table(
        "used_client_assertions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=200), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_used_client_assertions")),
        sa.UniqueConstraint("client_id", "jti", name="uq_used_client_assertions"),
    )
    op.create_index(
        op.f("ix_used_client_assertions_expires_at"), "used_client_assertions", ["expires_at"]
    )

    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.String(length=2000), nullable=False),
        sa.Column("scope", sa.String(length=1000), nullable=False),
        sa.Column("nonce", sa.String(length=500), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("code_challenge_method", sa.String(length=8), nullable=False),
        sa.Column("acr", sa.String(length=64), nullable=False),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("auth_time", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("family_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_authorization_codes_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
            name=op.f("fk_authorization_codes_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_authorization_codes")),
    )
    op.create_index(
        op.f("ix_authorization_codes_session_id"), "authorization_codes", ["session_id"]
    )

    op.create_table(
        "token_families",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("scope", sa.String(length=1000), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("revoke_reason", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_token_families_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
            name=op.f("fk_token_families_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_families")),
    )
    op.create_index(op.f("ix_token_families_account_id"), "token_families", ["account_id"])
    op.create_index(
        "ix_token_families_live_session", "token_families", ["session_id", "revoked_at"]
    )

    op.create_table(
        "access_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.Uuid(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["family_id"],
            ["token_families.id"],
            name=op.f("fk_access_tokens_family_id_token_families"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_access_tokens")),
    )
    op.create_index(op.f("ix_access_tokens_expires_at"), "access_tokens", ["expires_at"])
    op.create_index(op.f("ix_access_tokens_family_id"), "access_tokens", ["family_id"])

    op.create_table(
        "provider_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("cookie_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("auth_time", UTCDateTime(), nullable=False),
        sa.Column("full_until", UTCDateTime(), nullable=True),
        sa.Column("card_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_provider_sessions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["card_id"],
            ["cards.id"],
            name=op.f("fk_provider_sessions_card_id_cards"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_sessions")),
        sa.UniqueConstraint("cookie_hash", name=op.f("uq_provider_sessions_cookie_hash")),
    )
    op.create_index(op.f("ix_provider_sessions_account_id"), "provider_sessions", ["account_id"])
    op.create_index(op.f("ix_provider_sessions_card_id"), "provider_sessions", ["card_id"])

    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["family_id"],
            ["token_families.id"],
            name=op.f("fk_refresh_tokens_family_id_token_families"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_refresh_tokens")),
    )
    op.create_index(op.f("ix_refresh_tokens_family_id"), "refresh_tokens", ["family_id"])

    op.create_table(
        "session_clients",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("first_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
            name=op.f("fk_session_clients_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["provider_sessions.id"],
            name=op.f("fk_session_clients_session_id_provider_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "client_id", name=op.f("pk_session_clients")),
    )
    op.add_column(
        "accounts", sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("accounts", sa.Column("last_failed_login_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_index(op.f("ix_refresh_tokens_family_id"), "refresh_tokens")
    op.drop_index(op.f("ix_provider_sessions_card_id"), "provider_sessions")
    op.drop_index(op.f("ix_provider_sessions_account_id"), "provider_sessions")
    op.drop_index(op.f("ix_access_tokens_family_id"), "access_tokens")
    op.drop_index(op.f("ix_access_tokens_expires_at"), "access_tokens")
    op.drop_index("ix_token_families_live_session", "token_families")
    op.drop_index(op.f("ix_token_families_account_id"), "token_families")
    op.drop_index(op.f("ix_authorization_codes_session_id"), "authorization_codes")
    op.drop_index(op.f("ix_used_client_assertions_expires_at"), "used_client_assertions")
    op.drop_table("session_clients")
    op.drop_table("refresh_tokens")
    op.drop_table("provider_sessions")
    op.drop_table("access_tokens")
    op.drop_table("token_families")
    op.drop_table("authorization_codes")
    op.drop_table("used_client_assertions")
    op.drop_table("signing_keys")
    op.drop_table("login_flows")
    op.drop_table("clients")
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("last_failed_login_at")
        batch_op.drop_column("failed_logins")
