"""The task queue, its flags and its finished batches (``comfy_kernel_manager.store``).

Tables are created only where missing, so a SQLite file written before
migrations existed is adopted as it is.
"""

import sqlalchemy as sa
from alembic import op

revision = "manager_0001"
down_revision = None
branch_labels = ("manager",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "manager_tasks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("item", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("result", sa.Text),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("finished", sa.Double),
        sqlite_autoincrement=True,
        if_not_exists=True,
    )
    op.create_table(
        "manager_meta",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text),
        if_not_exists=True,
    )
    op.create_table(
        "manager_batches",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("started", sa.Double, nullable=False),
        sa.Column("finished", sa.Double, nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    for table in ("manager_batches", "manager_meta", "manager_tasks"):
        op.drop_table(table)
