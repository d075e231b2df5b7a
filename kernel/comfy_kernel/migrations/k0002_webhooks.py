"""Webhook endpoints, secrets, tracked jobs, the delivery outbox and its attempts (``webhooks.store``)."""

import sqlalchemy as sa
from alembic import op

revision = "k0002"
down_revision = "k0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ck_webhook_endpoints",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("enabled", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("updated", sa.Double, nullable=False),
        if_not_exists=True,
    )
    op.create_index("ck_webhook_endpoints_owner", "ck_webhook_endpoints", ["owner"], if_not_exists=True)
    op.create_table(
        "ck_webhook_secrets",
        sa.Column("owner", sa.Text, primary_key=True),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "ck_webhook_jobs",
        sa.Column("prompt_id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("targets", sa.Text, nullable=False),
        sa.Column("base_url", sa.Text, nullable=False),
        sa.Column("final_queued", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created", sa.Double, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "ck_webhook_deliveries",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("prompt_id", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("endpoint_id", sa.Text),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt", sa.Double, nullable=False),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("delivered_at", sa.Double),
        if_not_exists=True,
    )
    op.create_index("ck_webhook_deliveries_due", "ck_webhook_deliveries", ["state", "next_attempt"],
                    if_not_exists=True)
    op.create_index("ck_webhook_deliveries_job", "ck_webhook_deliveries", ["prompt_id"], if_not_exists=True)
    op.create_table(
        "ck_webhook_attempts",
        sa.Column("delivery_id", sa.Text, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    for table in ("ck_webhook_attempts", "ck_webhook_deliveries", "ck_webhook_jobs", "ck_webhook_secrets",
                  "ck_webhook_endpoints"):
        op.drop_table(table)
