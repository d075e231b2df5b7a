"""``comfy-kernel billing ...``: the administrator's jobs from a shell, on the same database.

Works whether or not a server is running, on the kernel's database
(``--database``, SQLite or PostgreSQL): the command opens it and brings every
installed plugin's tables up to date as a server would; a running server
notices the change within about a second. Sub-commands: ``accounts``, ``credit``,
``plan``, ``ops``, ``approve``, ``reject``, ``usage``, ``verify``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from sqlalchemy import select

from . import ledger, queries
from .config import MICROS, ConfigError, Settings, add_arguments
from .tables import ACCOUNT_COLUMNS, OP_COLUMNS, accounts, ops


def add_commands(subparsers: Any) -> None:
    from comfy_kernel.config import add_server_arguments, apply_layered_defaults

    common = argparse.ArgumentParser(add_help=False)
    add_server_arguments(common)
    add_arguments(common)
    parser = subparsers.add_parser("billing", help="billing accounts, credits, plans, approvals and usage")
    sub = parser.add_subparsers(dest="billing_action", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        found = sub.add_parser(name, help=help, parents=[common])
        # The kernel layers the config file and COMFY_KERNEL_* over the options of `billing` itself, not over
        # those of its sub-commands: without this, `--database` given that way (PostgreSQL) would be missed.
        apply_layered_defaults(found, sys.argv[1:])
        return found

    action("accounts", "list accounts with plan and balance")
    p = action("credit", "add credits to an account (prepaid bucket)")
    p.add_argument("account", help="account key: ws:<workspace id>, or a user id without workspaces")
    p.add_argument("amount", type=float, help="in currency units (negative only with --kind adjustment)")
    p.add_argument("--kind", choices=["grant", "topup", "adjustment"], default="grant")
    p.add_argument("--note", default=None)
    p.add_argument("--key", default=None, help="idempotency key: the same key never credits twice")
    p = action("plan", "move an account to a plan now")
    p.add_argument("account")
    p.add_argument("plan_slug")
    p = action("ops", "list billing operations")
    p.add_argument("--pending", action="store_true")
    for name in ("approve", "reject"):
        p = action(name, f"{name} a pending top-up or paid subscription")
        p.add_argument("op_id")
        if name == "reject":
            p.add_argument("--reason", default="Declined")
    p = action("usage", "usage totals per period")
    p.add_argument("--group-by", choices=list(queries.GROUPS), default="user")
    p.add_argument("--bucket", choices=list(queries.BUCKETS), default="day")
    p.add_argument("--from", dest="start", type=float, default=None, help="epoch seconds")
    p.add_argument("--to", dest="end", type=float, default=None, help="epoch seconds")
    p.add_argument("--csv", action="store_true")
    action("verify", "check that every balance equals the sum of its ledger entries")
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from comfy_kernel.kernel import Kernel

    from .service import kernel_directory

    kernel = Kernel(args)
    settings = Settings.from_config(args, kernel_directory(kernel), kernel.dirs.user)
    try:
        settings.load_plans()
    except (ConfigError, OSError, ValueError) as exc:
        print(f"error: the plan file: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_run(kernel, settings, args))
    except (LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _run(kernel: Any, settings: Settings, args: argparse.Namespace) -> int:
    """Open the kernel's database as a server would (bringing every installed plugin's tables up to date)."""
    from comfy_kernel.storage import SQLiteDatabase, upgrade

    from .adopt import import_file
    from .store import BillingStore

    kernel.host.discover()  # the plugins' migrations: a command may run before any server did
    db = kernel.database
    if isinstance(db, SQLiteDatabase):
        os.makedirs(os.path.dirname(os.path.abspath(db.path)), exist_ok=True)
    await db.open()
    try:
        await upgrade(db, kernel.migrations())
        store = BillingStore(db)
        await store.open(watch=False)
        await import_file(store, settings.import_from)
        return await _command(store, settings, args)
    finally:
        await db.close()


async def _command(store: Any, settings: Settings, args: argparse.Namespace) -> int:
    db = store.db
    action, now = args.billing_action, time.time()
    if action == "accounts":
        for row in await db.fetch_all(select(accounts).order_by(accounts.c.account)):
            item = dict(zip(ACCOUNT_COLUMNS, row, strict=True))
            total = (item["monthly_micros"] + item["prepaid_micros"]) / MICROS
            print(f"{item['account']}\t{item['plan'] or '-'}\t{item['status']}\t{total:.4f} {settings.currency}")
    elif action == "credit":
        amount = round(args.amount * MICROS)
        if amount == 0 or (amount < 0 and args.kind != "adjustment"):
            raise ValueError("the amount must be positive (negative only with --kind adjustment)")
        done = await store.write(lambda tx: ledger.credit(
            tx, settings, account=args.account, amount=amount, kind=args.kind, now=now,
            key=f"admin:{args.account}:{args.key}" if args.key else None, actor="cli", note=args.note))
        print("credited" if done else "already credited with this key")
    elif action == "plan":
        plan = settings.plan(args.plan_slug)
        if plan is None:
            raise LookupError(f"no plan {args.plan_slug!r} in the plan file")
        await store.write(lambda tx: ledger.apply_plan(tx, settings, args.account, plan, now,
                                                       op_id=f"cli-{time.time_ns()}", actor="cli",
                                                       force_immediate=True))
        print(f"{args.account} is on {plan.slug}")
    elif action == "ops":
        stmt = select(ops).order_by(ops.c.started)
        if args.pending:
            stmt = stmt.where(ops.c.status == "pending")
        for row in await db.fetch_all(stmt):
            op = dict(zip(OP_COLUMNS, row, strict=True))
            print(f"{op['id']}\t{op['account']}\t{op['kind']}\t{op['status']}\t{op['params']}")
    elif action in ("approve", "reject"):
        op = await ledger.get_op(db, args.op_id)
        if op is None:
            raise LookupError(f"no operation {args.op_id}")
        if op["status"] != "pending":
            raise ValueError(f"the operation is already {op['status']}")
        result = await store.write(lambda tx: ledger.settle_op(
            tx, settings, args.op_id, action == "approve", now, error=getattr(args, "reason", None), actor="cli"))
        print(f"{result['id']} {result['status']}")
    elif action == "usage":
        rows = await queries.usage_summary(db, queries.UsageFilter(start=args.start, end=args.end), args.group_by,
                                           args.bucket)
        if args.csv:
            sys.stdout.write(queries.to_csv(rows, queries.SUMMARY_FIELDS))
        else:
            print(json.dumps(rows, indent=1))
    elif action == "verify":
        bad = await queries.ledger_balance_check(db)
        for row in bad:
            print(f"mismatch: {dict(row)}")
        print("ledger and balances agree" if not bad else f"{len(bad)} account(s) disagree")
        return 1 if bad else 0
    return 0
