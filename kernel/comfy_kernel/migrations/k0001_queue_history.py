"""The durable queue and the history (``execution.store``).

Tables and indexes are created only where missing, so a SQLite file written
before migrations existed is adopted as it is.
"""

import sqlalchemy as sa
from alembic import op

revision = "k0001"
down_revision = None
branch_labels = ("kernel",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ck_queue",
        sa.Column("prompt_id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("number", sa.Double, nullable=False),
        sa.Column("item", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("started", sa.Double),
        if_not_exists=True,
    )
    op.create_table(
        "ck_history",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("prompt_id", sa.Text, nullable=False, unique=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("entry", sa.LargeBinary, nullable=False),
        sa.Column("created", sa.Double),
        sa.Column("started", sa.Double),
        sa.Column("ended", sa.Double),
        sa.Column("outputs_count", sa.Integer, nullable=False, server_default="0"),
        sqlite_autoincrement=True,
        if_not_exists=True,
    )
    op.create_index("ck_history_owner", "ck_history", ["owner", "seq"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ck_history_owner", "ck_history")
    op.drop_table("ck_history")
    op.drop_table("ck_queue")
