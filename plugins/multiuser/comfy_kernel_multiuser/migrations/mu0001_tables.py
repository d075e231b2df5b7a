"""Users, workspaces, credentials, secrets, OAuth grants, output ownership and the audit log (``store``).

The schema the plugin created itself before migrations existed. Tables and
indexes are created only where missing, so such a SQLite file is adopted
as it is.
"""

import sqlalchemy as sa
from alembic import op

revision = "mu0001"
down_revision = None
branch_labels = ("multiuser",)
depends_on = None

#: Usernames and e-mail addresses compare without case (SQLite's NOCASE; on PostgreSQL see mu0002).
NOCASE = sa.Text().with_variant(sa.Text(collation="NOCASE"), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mu_users",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("username", NOCASE, nullable=False, unique=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("email", NOCASE),
        sa.Column("password_hash", sa.Text),
        sa.Column("is_admin", sa.Integer, nullable=False, server_default="0"),
        sa.Column("disabled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("personal_workspace_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "mu_external_identities",
        sa.Column("issuer", sa.Text, primary_key=True),
        sa.Column("subject", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "mu_workspaces",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("deleted_at", sa.Double),
        if_not_exists=True,
    )
    op.create_table(
        "mu_members",
        sa.Column("workspace_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("joined_at", sa.Double, nullable=False),
        if_not_exists=True,
    )
    op.create_index("mu_members_user", "mu_members", ["user_id"], if_not_exists=True)
    op.create_table(
        "mu_invites",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("email", NOCASE, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("invited_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("accepted_at", sa.Double),
        sa.Column("revoked_at", sa.Double),
        if_not_exists=True,
    )
    op.create_table(
        "mu_sessions",
        sa.Column("token_hash", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("csrf_token", sa.Text, nullable=False),
        sa.Column("workspace_id", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("user_agent", sa.Text),
        if_not_exists=True,
    )
    op.create_index("mu_sessions_user", "mu_sessions", ["user_id"], if_not_exists=True)
    op.create_table(
        "mu_api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("key_hash", sa.Text, nullable=False, unique=True),
        sa.Column("key_prefix", sa.Text, nullable=False),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double),
        sa.Column("last_used_at", sa.Double),
        sa.Column("revoked_at", sa.Double),
        if_not_exists=True,
    )
    op.create_index("mu_api_keys_ws", "mu_api_keys", ["workspace_id", "user_id"], if_not_exists=True)
    op.create_table(
        "mu_signing_keys",
        sa.Column("kid", sa.Text, primary_key=True),
        sa.Column("private_key", sa.LargeBinary, nullable=False),
        sa.Column("public_jwk", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("sign_until", sa.Double, nullable=False),
        sa.Column("verify_until", sa.Double, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "mu_secrets",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("provider", sa.Text),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("last_used_at", sa.Double),
        sa.UniqueConstraint("user_id", "workspace_id", "name"),
        if_not_exists=True,
    )
    op.create_table(
        "mu_oauth_clients",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("client_name", sa.Text, nullable=False),
        sa.Column("application_type", sa.Text, nullable=False),
        sa.Column("redirect_uris", sa.Text, nullable=False),
        sa.Column("grant_types", sa.Text, nullable=False),
        sa.Column("response_types", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "mu_oauth_requests",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("code_challenge", sa.Text, nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("csrf_token", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("consumed_at", sa.Double),
        if_not_exists=True,
    )
    op.create_table(
        "mu_oauth_codes",
        sa.Column("code_hash", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("code_challenge", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("used_at", sa.Double),
        sa.Column("family_id", sa.Text),
        if_not_exists=True,
    )
    op.create_table(
        "mu_refresh_tokens",
        sa.Column("token_hash", sa.Text, primary_key=True),
        sa.Column("family_id", sa.Text, nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("rotated_at", sa.Double),
        sa.Column("revoked_at", sa.Double),
        if_not_exists=True,
    )
    op.create_index("mu_refresh_family", "mu_refresh_tokens", ["family_id"], if_not_exists=True)
    op.create_table(
        "mu_oauth_consents",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("resource", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, primary_key=True),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("granted_at", sa.Double, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "mu_setup_tokens",
        sa.Column("token_hash", sa.Text, primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("used_at", sa.Double),
        if_not_exists=True,
    )
    op.create_table(
        "mu_files",
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "mu_audit",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text),
        sa.Column("actor_id", sa.Text),
        sa.Column("address", sa.Text),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
        sqlite_autoincrement=True,
        if_not_exists=True,
    )


def downgrade() -> None:
    for table in ("mu_audit", "mu_files", "mu_setup_tokens", "mu_oauth_consents", "mu_refresh_tokens",
                  "mu_oauth_codes", "mu_oauth_requests", "mu_oauth_clients", "mu_secrets", "mu_signing_keys",
                  "mu_api_keys", "mu_sessions", "mu_invites", "mu_members", "mu_workspaces",
                  "mu_external_identities", "mu_users"):
        op.drop_table(table)
