"""The billing tables, as SQLAlchemy Core sees them (the migrations in ``migrations/`` create them).

* ``bl_meta``: a few named values: when metering started, how far the last
  reconciliation looked, and ``changes``, a counter every billing write
  transaction advances so that a server notices the writes of other
  processes (see :mod:`.store`).
* ``bl_accounts``: one row per account: plan, period, and the two buckets in
  micros (their sum is the balance).
* ``bl_ledger``: append-only (a trigger refuses updates and deletes); every
  change of a bucket is one row with a unique ``key``.
* ``bl_usage``: one row per metered prompt run, keyed by its run id.
* ``bl_ops``: top-ups and plan changes and their state; ``bl_events``: what
  happened to an account, newest last.

Also the tables of others that billing reads: the kernel's history (to
charge prompts whose usage a crash lost) and the multiuser plugin's users,
workspaces and members (per-seat plans; ``user:<name>`` accounts).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Double, Integer, MetaData, Table, Text

from comfy_kernel.execution.store import history_table

metadata = MetaData()

meta = Table("bl_meta", metadata, Column("key", Text, primary_key=True), Column("value", Text, nullable=False))
accounts = Table(
    "bl_accounts", metadata,
    Column("account", Text, primary_key=True), Column("plan", Text), Column("status", Text, nullable=False),
    Column("period", Text), Column("period_start", Double), Column("period_end", Double), Column("cancel_at", Double),
    Column("pending_plan", Text), Column("monthly_micros", BigInteger, nullable=False),
    Column("prepaid_micros", BigInteger, nullable=False), Column("created", Double, nullable=False),
    Column("updated", Double, nullable=False),
)
ledger = Table(
    "bl_ledger", metadata,
    Column("id", BigInteger, primary_key=True), Column("key", Text, nullable=False, unique=True),
    Column("account", Text, nullable=False), Column("user_id", Text), Column("kind", Text, nullable=False),
    Column("bucket", Text, nullable=False), Column("amount_micros", BigInteger, nullable=False),
    Column("prompt_id", Text), Column("op_id", Text), Column("actor", Text), Column("note", Text),
    Column("created", Double, nullable=False),
)
usage = Table(
    "bl_usage", metadata,
    Column("run_id", Text, primary_key=True), Column("prompt_id", Text, nullable=False),
    Column("account", Text, nullable=False), Column("user_id", Text), Column("workspace_id", Text),
    Column("plan", Text), Column("worker", Text), Column("device_type", Text), Column("device_name", Text),
    Column("status", Text, nullable=False), Column("created", Double), Column("started", Double),
    Column("ended", Double, nullable=False), Column("wall_s", Double, nullable=False),
    Column("busy_s", Double, nullable=False), Column("nodes", Text, nullable=False),
    Column("models", Text, nullable=False), Column("outputs_count", BigInteger, nullable=False),
    Column("outputs_bytes", BigInteger, nullable=False), Column("cost_micros", BigInteger, nullable=False),
    Column("recovered", Integer, nullable=False),
)
ops = Table(
    "bl_ops", metadata,
    Column("id", Text, primary_key=True), Column("account", Text, nullable=False), Column("user_id", Text),
    Column("kind", Text, nullable=False), Column("status", Text, nullable=False), Column("params", Text, nullable=False),
    Column("idempotency_key", Text), Column("error_message", Text), Column("provider", Text),
    Column("started", Double, nullable=False), Column("completed", Double),
)
events = Table(
    "bl_events", metadata,
    Column("seq", BigInteger, primary_key=True), Column("id", Text, nullable=False, unique=True),
    Column("account", Text, nullable=False), Column("event_type", Text, nullable=False),
    Column("params", Text, nullable=False), Column("created", Double, nullable=False),
)

# Read only: the multiuser plugin's tables (absent without it; every read copes).
others = MetaData()
mu_users = Table("mu_users", others, Column("id", Text, primary_key=True), Column("username", Text),
                 Column("personal_workspace_id", Text))
mu_workspaces = Table("mu_workspaces", others, Column("id", Text, primary_key=True), Column("type", Text))
mu_members = Table("mu_members", others, Column("workspace_id", Text, primary_key=True),
                   Column("user_id", Text, primary_key=True))

ACCOUNT_COLUMNS = tuple(accounts.c.keys())
LEDGER_COLUMNS = tuple(ledger.c.keys())
USAGE_COLUMNS = tuple(usage.c.keys())
OP_COLUMNS = tuple(ops.c.keys())
EVENT_COLUMNS = tuple(events.c.keys())

__all__ = ["ACCOUNT_COLUMNS", "EVENT_COLUMNS", "LEDGER_COLUMNS", "OP_COLUMNS", "USAGE_COLUMNS", "accounts",
           "events", "history_table", "ledger", "meta", "metadata", "mu_members", "mu_users", "mu_workspaces",
           "ops", "usage"]
