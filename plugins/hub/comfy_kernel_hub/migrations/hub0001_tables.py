"""Saved workflows and their versions, shares and snapshots, profiles, labels, media uploads, feedback (``store``).

The schema the hub created itself before migrations existed. Tables and
indexes are created only where missing, so such a SQLite file is adopted
as it is.
"""

import sqlalchemy as sa
from alembic import op

revision = "hub0001"
down_revision = None
branch_labels = ("hub",)
depends_on = None

LIVE_FILE = "source_file IS NOT NULL AND deleted_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "hub_workflows",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("default_view", sa.Text, nullable=False, server_default="workflow"),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("forked_from_workflow_id", sa.Text),
        sa.Column("forked_from_version_id", sa.Text),
        sa.Column("source_file", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("deleted_at", sa.Double),
        if_not_exists=True,
    )
    op.create_index("hub_workflows_owner", "hub_workflows", ["owner", "deleted_at"], if_not_exists=True)
    op.create_index("hub_workflows_file", "hub_workflows", ["owner", "source_file"], unique=True,
                    sqlite_where=sa.text(LIVE_FILE), postgresql_where=sa.text(LIVE_FILE), if_not_exists=True)
    op.create_table(
        "hub_versions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workflow_id", sa.Text, sa.ForeignKey("hub_workflows.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("workflow_json", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.UniqueConstraint("workflow_id", "version"),
        if_not_exists=True,
    )
    op.create_table(
        "hub_shares",
        sa.Column("share_id", sa.Text, primary_key=True),
        sa.Column("workflow_id", sa.Text, nullable=False, unique=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("listed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("profile_username", sa.Text),
        sa.Column("status", sa.Text, nullable=False, server_default="approved"),
        sa.Column("hub_fields", sa.Text, nullable=False, server_default="{}"),
        sa.Column("unpublished_at", sa.Double),
        if_not_exists=True,
    )
    op.create_table(
        "hub_snapshots",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("share_id", sa.Text, sa.ForeignKey("hub_shares.share_id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("version_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("workflow_json", sa.Text, nullable=False),
        sa.Column("assets", sa.Text, nullable=False),
        sa.Column("publish_time", sa.Double, nullable=False),
        sa.UniqueConstraint("share_id", "seq"),
        if_not_exists=True,
    )
    op.create_table(
        "hub_profiles",
        sa.Column("username", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("avatar_url", sa.Text),
        sa.Column("website_urls", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_at", sa.Double, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "hub_labels",
        sa.Column("type", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        if_not_exists=True,
    )
    op.create_table(
        "hub_uploads",
        sa.Column("token", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("stored_name", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("uploaded_at", sa.Double),
        sa.Column("claimed_at", sa.Double),
        if_not_exists=True,
    )
    op.create_table(
        "hub_feedback",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("content", sa.Text),
        sa.Column("rating", sa.Integer),
        sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.Double, nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    for table in ("hub_feedback", "hub_uploads", "hub_labels", "hub_profiles", "hub_snapshots", "hub_shares",
                  "hub_versions", "hub_workflows"):
        op.drop_table(table)
