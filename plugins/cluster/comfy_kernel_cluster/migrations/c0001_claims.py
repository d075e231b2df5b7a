"""The workers' leases on the prompts they run (``comfy_kernel_cluster.claims``).

Created only where missing, so a shared SQLite file of an earlier version
keeps its table; the time is double precision on PostgreSQL.
"""

import sqlalchemy as sa
from alembic import op

revision = "c0001"
down_revision = None
branch_labels = ("cluster",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ck_cluster_claims",
        sa.Column("prompt_id", sa.Text, primary_key=True),
        sa.Column("worker", sa.Text, nullable=False),
        sa.Column("beat", sa.Double().with_variant(sa.REAL(), "sqlite"), nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("ck_cluster_claims")
