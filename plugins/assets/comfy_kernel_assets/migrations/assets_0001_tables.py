"""Contents, assets, tags, seen files and tasks (``comfy_kernel_assets.store``).

Tables and indexes are created only where missing, so a SQLite file written
before migrations existed is adopted as it is. On PostgreSQL the text columns
that listings sort by use the "C" collation: pages of shared and own assets
are merged in Python, which orders strings by code point as SQLite does.
"""

import sqlalchemy as sa
from alembic import op

revision = "assets_0001"
down_revision = None
branch_labels = ("assets",)
depends_on = None

SORTED_TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "assets_contents",
        sa.Column("hash", sa.Text, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mime_type", sa.Text),
        sa.Column("has_blob", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Double, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "assets_items",
        sa.Column("id", SORTED_TEXT, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("name", SORTED_TEXT, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mime_type", sa.Text),
        sa.Column("user_metadata", sa.Text, nullable=False, server_default="{}"),
        sa.Column("preview_id", sa.Text),
        sa.Column("job_id", sa.Text),
        sa.Column("file_path", sa.Text),
        sa.Column("source", sa.Text),
        sa.Column("missing", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("last_access", sa.Double, nullable=False),
        if_not_exists=True,
    )
    for name, columns in (("assets_items_visible_created", ["owner", "missing", "created_at", "id"]),
                          ("assets_items_visible_updated", ["owner", "missing", "updated_at", "id"]),
                          ("assets_items_visible_name", ["owner", "missing", "name", "id"]),
                          ("assets_items_hash", ["hash"]),
                          ("assets_items_file", ["file_path"]),
                          ("assets_items_job", ["job_id"])):
        op.create_index(name, "assets_items", columns, if_not_exists=True)
    # owner and missing are copied from the asset so that tag counts (/api/tags,
    # list totals for a tag filter) are answered from this table's index alone.
    op.create_table(
        "assets_tags",
        sa.Column("asset_id", SORTED_TEXT, sa.ForeignKey("assets_items.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tag", SORTED_TEXT, nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("missing", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("asset_id", "tag"),
        sqlite_with_rowid=False,
        if_not_exists=True,
    )
    op.create_index("assets_tags_tag", "assets_tags", ["tag", "owner", "missing", "asset_id"], if_not_exists=True)
    op.create_table(
        "assets_seen_files",
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime", sa.Double, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "assets_tasks",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("task_name", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("create_time", sa.Double, nullable=False),
        sa.Column("update_time", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double),
        sa.Column("completed_at", sa.Double),
        if_not_exists=True,
    )
    op.create_index("assets_tasks_owner", "assets_tasks", ["owner", "create_time"], if_not_exists=True)


def downgrade() -> None:
    for table in ("assets_tasks", "assets_seen_files", "assets_tags", "assets_items", "assets_contents"):
        op.drop_table(table)
