"""Accounts, the append-only ledger, usage, operations and events (``comfy_kernel_billing.tables``).

The schema the plugin kept in its own SQLite file before it moved into the
kernel's database, created only where missing, so a file that already has it
is adopted as it is. Amounts are 64-bit integers and times double precision
on PostgreSQL; on SQLite the column types are the ones those files have.
"""

import sqlalchemy as sa
from alembic import op

revision = "b0001"
down_revision = None
branch_labels = ("billing",)
depends_on = None

MICROS = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SECONDS = sa.Double().with_variant(sa.REAL(), "sqlite")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

APPEND_ONLY = "the ledger is append-only"


def upgrade() -> None:
    op.create_table(
        "bl_meta",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "bl_accounts",
        sa.Column("account", sa.Text, primary_key=True),
        sa.Column("plan", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("period", sa.Text),
        sa.Column("period_start", SECONDS),
        sa.Column("period_end", SECONDS),
        sa.Column("cancel_at", SECONDS),
        sa.Column("pending_plan", sa.Text),
        sa.Column("monthly_micros", MICROS, nullable=False, server_default="0"),
        sa.Column("prepaid_micros", MICROS, nullable=False, server_default="0"),
        sa.Column("created", SECONDS, nullable=False),
        sa.Column("updated", SECONDS, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "bl_ledger",
        sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("key", sa.Text, nullable=False, unique=True),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("bucket", sa.Text, nullable=False),
        sa.Column("amount_micros", MICROS, nullable=False),
        sa.Column("prompt_id", sa.Text),
        sa.Column("op_id", sa.Text),
        sa.Column("actor", sa.Text),
        sa.Column("note", sa.Text),
        sa.Column("created", SECONDS, nullable=False),
        sqlite_autoincrement=True,
        if_not_exists=True,
    )
    op.create_index("bl_ledger_account", "bl_ledger", ["account", "id"], if_not_exists=True)
    _append_only()
    op.create_table(
        "bl_usage",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("prompt_id", sa.Text, nullable=False),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text),
        sa.Column("workspace_id", sa.Text),
        sa.Column("plan", sa.Text),
        sa.Column("worker", sa.Text),
        sa.Column("device_type", sa.Text),
        sa.Column("device_name", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created", SECONDS),
        sa.Column("started", SECONDS),
        sa.Column("ended", SECONDS, nullable=False),
        sa.Column("wall_s", SECONDS, nullable=False),
        sa.Column("busy_s", SECONDS, nullable=False),
        sa.Column("nodes", sa.Text, nullable=False),
        sa.Column("models", sa.Text, nullable=False),
        sa.Column("outputs_count", MICROS, nullable=False),
        sa.Column("outputs_bytes", MICROS, nullable=False),
        sa.Column("cost_micros", MICROS, nullable=False),
        sa.Column("recovered", sa.Integer, nullable=False, server_default="0"),
        if_not_exists=True,
    )
    op.create_index("bl_usage_account", "bl_usage", ["account", "ended"], if_not_exists=True)
    op.create_index("bl_usage_ended", "bl_usage", ["ended"], if_not_exists=True)
    op.create_table(
        "bl_ops",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("provider", sa.Text),
        sa.Column("started", SECONDS, nullable=False),
        sa.Column("completed", SECONDS),
        sa.UniqueConstraint("account", "idempotency_key"),
        if_not_exists=True,
    )
    op.create_index("bl_ops_status", "bl_ops", ["status", "started"], if_not_exists=True)
    op.create_table(
        "bl_events",
        sa.Column("seq", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("created", SECONDS, nullable=False),
        sqlite_autoincrement=True,
        if_not_exists=True,
    )
    op.create_index("bl_events_account", "bl_events", ["account", "seq"], if_not_exists=True)


def _append_only() -> None:
    """Updates and deletes of ledger rows fail, whoever sends them (a trigger; SQL differs per database)."""
    if op.get_bind().dialect.name == "sqlite":
        for name, action in (("bl_ledger_no_update", "UPDATE"), ("bl_ledger_no_delete", "DELETE")):
            op.execute(f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {action} ON bl_ledger "
                       f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END")
        return
    op.execute("CREATE OR REPLACE FUNCTION bl_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS "
               f"$$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$")
    for name, action, each in (("bl_ledger_no_update", "UPDATE", "ROW"), ("bl_ledger_no_delete", "DELETE", "ROW"),
                               ("bl_ledger_no_truncate", "TRUNCATE", "STATEMENT")):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON bl_ledger")
        op.execute(f"CREATE TRIGGER {name} BEFORE {action} ON bl_ledger "
                   f"FOR EACH {each} EXECUTE FUNCTION bl_ledger_append_only()")


def downgrade() -> None:
    for table in ("bl_events", "bl_ops", "bl_usage", "bl_ledger", "bl_accounts", "bl_meta"):
        op.drop_table(table)
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS bl_ledger_append_only()")
