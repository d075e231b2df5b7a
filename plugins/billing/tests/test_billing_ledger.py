"""The ledger on both back-ends (SQLite, PostgreSQL): idempotent charges, buckets, periods, plan changes,
operations, charges of two writers at once, the reconciliation that charges a prompt whose history was
written just before a crash, and the adoption of the billing file older versions kept."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
from datetime import UTC, datetime

import billing_helpers as h
import pytest
from sqlalchemy import delete, func, select, text, update

from comfy_kernel.config import default_config
from comfy_kernel.execution.store import Store
from comfy_kernel.kernel import Kernel
from comfy_kernel.migrations import KERNEL
from comfy_kernel.storage import connect, upgrade
from comfy_kernel.storage.migrations import script_heads
from comfy_kernel_billing import ledger, queries
from comfy_kernel_billing.adopt import import_file
from comfy_kernel_billing.config import Settings, apply_plan_file
from comfy_kernel_billing.migrations import BILLING
from comfy_kernel_billing.service import Billing
from comfy_kernel_billing.store import BillingStore
from comfy_kernel_billing.tables import accounts, events, meta
from comfy_kernel_billing.tables import ledger as ledger_table
from comfy_kernel_billing.tables import usage as usage_table

PLANS = {
    "currency": "usd", "default_plan": "free",
    "plans": {
        "free": {"monthly_credits": 1.0, "price_per_second": {"cpu": 0.01}},
        "pro": {"tier": "PRO", "price_cents": 3000, "monthly_credits": 30.0, "price_per_second": {"cpu": 0.005}},
        "lite": {"tier": "STANDARD", "price_cents": 1000, "monthly_credits": 10.0},
        "yearly": {"tier": "PRO", "duration": "ANNUAL", "price_cents": 30000, "monthly_credits": 300.0},
    },
}
JUNE = datetime(2025, 6, 10, tzinfo=UTC).timestamp()

# The billing file as versions before the storage layer wrote it (comfy-kernel-billing.db).
OLD_SCHEMA = """
CREATE TABLE bl_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE bl_accounts (account TEXT PRIMARY KEY, plan TEXT, status TEXT NOT NULL, period TEXT,
    period_start REAL, period_end REAL, cancel_at REAL, pending_plan TEXT,
    monthly_micros INTEGER NOT NULL DEFAULT 0, prepaid_micros INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE bl_ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, account TEXT NOT NULL,
    user_id TEXT, kind TEXT NOT NULL, bucket TEXT NOT NULL, amount_micros INTEGER NOT NULL, prompt_id TEXT,
    op_id TEXT, actor TEXT, note TEXT, created REAL NOT NULL);
CREATE INDEX bl_ledger_account ON bl_ledger(account, id);
CREATE TRIGGER bl_ledger_no_update BEFORE UPDATE ON bl_ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER bl_ledger_no_delete BEFORE DELETE ON bl_ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE bl_usage (run_id TEXT PRIMARY KEY, prompt_id TEXT NOT NULL, account TEXT NOT NULL, user_id TEXT,
    workspace_id TEXT, plan TEXT, worker TEXT, device_type TEXT, device_name TEXT, status TEXT NOT NULL,
    created REAL, started REAL, ended REAL NOT NULL, wall_s REAL NOT NULL, busy_s REAL NOT NULL,
    nodes TEXT NOT NULL, models TEXT NOT NULL, outputs_count INTEGER NOT NULL, outputs_bytes INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL, recovered INTEGER NOT NULL DEFAULT 0);
CREATE INDEX bl_usage_account ON bl_usage(account, ended);
CREATE INDEX bl_usage_ended ON bl_usage(ended);
CREATE TABLE bl_ops (id TEXT PRIMARY KEY, account TEXT NOT NULL, user_id TEXT, kind TEXT NOT NULL,
    status TEXT NOT NULL, params TEXT NOT NULL, idempotency_key TEXT, error_message TEXT, provider TEXT,
    started REAL NOT NULL, completed REAL, UNIQUE(account, idempotency_key));
CREATE INDEX bl_ops_status ON bl_ops(status, started);
CREATE TABLE bl_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, account TEXT NOT NULL,
    event_type TEXT NOT NULL, params TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX bl_events_account ON bl_events(account, seq);
INSERT INTO bl_meta VALUES ('metering_since', '1700000000.0');
INSERT INTO bl_accounts VALUES ('alice', 'free', 'active', '2025-06', 1748736000, 1751328000, NULL, NULL,
    400000, 2500000, 1, 2);
INSERT INTO bl_ledger (key, account, kind, bucket, amount_micros, created)
    VALUES ('grant:alice:2025-06', 'alice', 'monthly_grant', 'monthly', 1000000, 1),
           ('topup:1', 'alice', 'topup', 'prepaid', 2500000, 2),
           ('usage:r1:monthly', 'alice', 'usage', 'monthly', -600000, 3);
INSERT INTO bl_events (id, account, event_type, params, created) VALUES ('ev_1', 'alice', 'credits.granted', '{}', 2);
"""


@pytest.fixture
def settings():
    s = Settings()
    apply_plan_file(s, PLANS)
    return s


def target_of(request, tmp_path, name: str = "k.db") -> str:
    return str(tmp_path / name) if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path) -> str:
    return target_of(request, tmp_path)


@pytest.fixture
async def db(target):
    database = connect(target)
    await database.open()
    await upgrade(database, [KERNEL, BILLING])
    yield database
    await database.close()


@pytest.fixture
async def store(db):
    s = BillingStore(db)
    await s.open(watch=False)
    yield s
    await s.close()


def usage(run_id: str, account: str, cost: int, ended: float = JUNE) -> dict:
    return {"run_id": run_id, "prompt_id": "p-" + run_id, "account": account, "user_id": "u1", "status": "success",
            "ended": ended, "started": ended - 2, "wall_s": 2.0, "busy_s": 1.5, "nodes": {"1": ["X", 2.0, 1.5, False]},
            "models": ["checkpoints/a.safetensors"], "outputs_count": 1, "outputs_bytes": 10, "cost_micros": cost}


async def buckets(db, account: str) -> tuple[int, int]:
    row = await ledger.account_row(db, account)
    return row["monthly_micros"], row["prepaid_micros"]


def test_the_declared_head_is_the_newest_script():
    assert script_heads([BILLING]) == [BILLING.head]


async def test_new_account_gets_the_default_plan_and_its_monthly_credits(store, settings):
    row = await store.write(lambda tx: ledger.ensure_account(tx, settings, "alice", JUNE))
    assert row["plan"] == "free" and row["status"] == "active" and row["period"] == "2025-06"
    assert row["monthly_micros"] == 1_000_000 and row["prepaid_micros"] == 0
    assert row["period_end"] == datetime(2025, 7, 1, tzinfo=UTC).timestamp()
    again = await store.write(lambda tx: ledger.ensure_account(tx, settings, "alice", JUNE + 60))
    assert again["monthly_micros"] == 1_000_000  # one grant per period


async def test_usage_is_charged_once_monthly_first(store, db, settings):
    await store.write(lambda tx: ledger.ensure_account(tx, settings, "alice", JUNE))
    await store.write(lambda tx: ledger.credit(tx, settings, account="alice", amount=500_000, kind="topup", now=JUNE))
    assert await store.write(lambda tx: ledger.record_usage(tx, settings, usage("r1", "alice", 1_200_000)))
    # the same run again (a re-run after a crash, or a replayed write): nothing changes
    assert not await store.write(lambda tx: ledger.record_usage(tx, settings, usage("r1", "alice", 1_200_000)))
    assert await buckets(db, "alice") == (0, 300_000)
    keys = [r[0] for r in await db.fetch_all(select(ledger_table.c.key).where(ledger_table.c.kind == "usage")
                                             .order_by(ledger_table.c.id))]
    assert keys == ["usage:r1:monthly", "usage:r1:prepaid"]
    # only the prepaid bucket can go below zero: a running prompt always finishes
    await store.write(lambda tx: ledger.record_usage(tx, settings, usage("r2", "alice", 1_000_000)))
    assert await buckets(db, "alice") == (0, -700_000)
    assert await queries.ledger_balance_check(db) == []


async def test_ledger_is_append_only(store, db, settings):
    await store.write(lambda tx: ledger.ensure_account(tx, settings, "alice", JUNE))
    with pytest.raises(Exception, match="append-only"):
        await db.execute(update(ledger_table).values(amount_micros=0))
    with pytest.raises(Exception, match="append-only"):
        await db.execute(delete(ledger_table))
    if db.kind == "postgresql":
        with pytest.raises(Exception, match="append-only"):
            await db.execute(text("TRUNCATE bl_ledger"))
    assert await db.scalar(select(func.count()).select_from(ledger_table)) == 1


async def test_period_rollover_expires_monthly_keeps_prepaid(store, db, settings):
    await store.write(lambda tx: ledger.ensure_account(tx, settings, "alice", JUNE))
    await store.write(lambda tx: ledger.credit(tx, settings, account="alice", amount=2_000_000, kind="grant",
                                               now=JUNE))
    await store.write(lambda tx: ledger.record_usage(tx, settings, usage("r1", "alice", 400_000)))
    july = datetime(2025, 7, 2, tzinfo=UTC).timestamp()
    row = await store.write(lambda tx: ledger.ensure_account(tx, settings, "alice", july))
    assert row["period"] == "2025-07" and row["monthly_micros"] == 1_000_000 and row["prepaid_micros"] == 2_000_000
    kinds = [tuple(r) for r in await db.fetch_all(select(ledger_table.c.kind, ledger_table.c.amount_micros)
                                                  .order_by(ledger_table.c.id))]
    assert ("expire", -600_000) in kinds and kinds.count(("monthly_grant", 1_000_000)) == 2


async def test_plan_changes_preview_and_apply(store, db, settings):
    row = await store.write(lambda tx: ledger.ensure_account(tx, settings, "alice", JUNE))
    pro = settings.plan("pro")
    preview = ledger.preview_change(settings, row, pro, JUNE)
    assert preview["transition_type"] == "new_subscription" and preview["is_immediate"]
    assert preview["cost_today_cents"] == 3000 and preview["credits_today_cents"] == 3000
    await store.write(lambda tx: ledger.apply_plan(tx, settings, "alice", pro, JUNE, op_id="op1"))
    row = await ledger.account_row(db, "alice")
    assert row["plan"] == "pro" and row["monthly_micros"] == 31_000_000
    # a downgrade waits for the period end
    lite = settings.plan("lite")
    preview = ledger.preview_change(settings, row, lite, JUNE)
    assert preview["transition_type"] == "downgrade" and not preview["is_immediate"]
    assert preview["effective_at"] == row["period_end"] and preview["cost_today_cents"] == 0
    await store.write(lambda tx: ledger.apply_plan(tx, settings, "alice", lite, JUNE, op_id="op2"))
    assert (await ledger.account_row(db, "alice"))["plan"] == "pro"
    july = datetime(2025, 7, 1, 1, tzinfo=UTC).timestamp()
    row = await store.write(lambda tx: ledger.ensure_account(tx, settings, "alice", july))
    assert row["plan"] == "lite" and row["monthly_micros"] == 10_000_000
    assert ledger.preview_change(settings, row, lite, july)["reason"] == "same_plan"
    assert ledger.preview_change(settings, row, settings.plan("yearly"), july)["transition_type"] == "duration_change"


async def test_cancel_then_resume_then_end(store, db, settings):
    await store.write(lambda tx: ledger.ensure_account(tx, settings, "alice", JUNE))
    with pytest.raises(LookupError):  # the default plan is not a subscription
        await store.write(lambda tx: ledger.cancel(tx, settings, "alice", JUNE, "op0"))
    await store.write(lambda tx: ledger.apply_plan(tx, settings, "alice", settings.plan("pro"), JUNE, op_id="op1"))
    end = await store.write(lambda tx: ledger.cancel(tx, settings, "alice", JUNE, "op2"))
    assert end == datetime(2025, 7, 1, tzinfo=UTC).timestamp()
    await store.write(lambda tx: ledger.resume(tx, settings, "alice", JUNE + 1, "op3"))
    with pytest.raises(LookupError):
        await store.write(lambda tx: ledger.resume(tx, settings, "alice", JUNE + 2, "op4"))
    await store.write(lambda tx: ledger.cancel(tx, settings, "alice", JUNE + 3, "op5"))
    july = datetime(2025, 7, 1, 1, tzinfo=UTC).timestamp()
    row = await store.write(lambda tx: ledger.ensure_account(tx, settings, "alice", july))
    assert row["plan"] == "free" and row["status"] == "active" and row["cancel_at"] is None
    found = [r[0] for r in await db.fetch_all(select(events.c.event_type).order_by(events.c.seq))]
    assert found.count("subscription.canceled") == 2 and "subscription.resumed" in found
    assert "subscription.ended" in found


async def test_operations_are_idempotent_and_settle_once(store, db, settings):
    await store.write(lambda tx: ledger.ensure_account(tx, settings, "alice", JUNE))

    def create(account: str, user: str) -> object:
        return store.write(lambda tx: ledger.create_op(
            tx, account=account, user_id=user, kind="topup", params={"amount_cents": 900}, idempotency_key="k",
            provider="manual", now=JUNE))

    op, created = await create("alice", "u1")
    same, again = await create("alice", "u1")
    assert created and not again and same["id"] == op["id"]
    other, created_b = await create("bob", "u2")
    assert created_b and other["id"] != op["id"]  # keys are per account
    for _ in range(2):
        done = await store.write(lambda tx: ledger.settle_op(tx, settings, op["id"], True, JUNE + 5))
    assert done["status"] == "succeeded" and ledger.op_json(done)["completed_at"].startswith("2025-06-10")
    assert (await buckets(db, "alice"))[1] == 9_000_000


async def test_usage_views_group_and_bucket(store, db, settings):
    for i, (account, user, ended) in enumerate([("ws:a", "u1", JUNE), ("ws:a", "u2", JUNE + 3600),
                                                  ("ws:b", "u3", JUNE + 86400)]):
        row = usage(f"r{i}", account, 1000, ended)
        row["user_id"], row["workspace_id"] = user, account[3:]
        await store.write(lambda tx, row=row: ledger.record_usage(tx, settings, row))
    by_ws = await queries.usage_summary(db, queries.UsageFilter(), "workspace", "day")
    assert [(r["period"], r["key"], r["prompts"]) for r in by_ws] == [("2025-06-10", "a", 2), ("2025-06-11", "b", 1)]
    by_model = await queries.usage_summary(db, queries.UsageFilter(account="ws:a"), "model", "month")
    assert by_model == [{"period": "2025-06", "key": "checkpoints/a.safetensors", "prompts": 2, "wall_s": 4.0,
                         "busy_s": 3.0, "cost_micros": 2000, "outputs_count": 2, "outputs_bytes": 20}]
    hours = await queries.usage_summary(db, queries.UsageFilter(start=JUNE + 1, end=JUNE + 7200), "user", "hour")
    assert [(r["period"], r["key"]) for r in hours] == [("2025-06-10T01:00:00Z", "u2")]
    assert [(r["period"], r["key"], r["prompts"]) for r in await queries.usage_summary(
        db, queries.UsageFilter(), "none", "year")] == [("2025", None, 3)]
    everything = await queries.usage_summary(db, queries.UsageFilter(), "none", "all")
    assert [(r["period"], r["key"], r["prompts"], r["cost_micros"]) for r in everything] == [("all", None, 3, 3000)]
    assert await queries.usage_summary(db, queries.UsageFilter(start=2**40), "none", "all") == []
    prompts, total = await queries.usage_prompts(db, queries.UsageFilter(account="ws:a"), 10, 0)
    assert total == 2 and [p["run_id"] for p in prompts] == ["r1", "r0"] and prompts[0]["nodes"]["1"][0] == "X"
    text_csv = queries.to_csv([{"key": "=cmd()", "prompts": 1}], ("key", "prompts"))
    assert text_csv.splitlines() == ["key,prompts", "'=cmd(),1"]


async def test_two_writers_charging_one_account_at_once_charge_each_run_once(target, db, settings):
    """Two processes (two connections: two servers on one PostgreSQL database, or a server and the command)
    charge one account at once, some runs twice: the monthly bucket never goes below zero, every run is
    charged exactly once, and the buckets equal the ledger."""
    other = connect(target)
    await other.open()
    stores = [BillingStore(db), BillingStore(other)]
    try:
        for s in stores:
            await s.open(watch=False)
        await stores[0].write(lambda tx: ledger.ensure_account(tx, settings, "alice", JUNE))  # 1,000,000 monthly
        runs = [usage(f"r{i}", "alice", 150_000) for i in range(10)]

        async def charge(s: BillingStore, record: dict) -> bool:
            return await s.write(lambda tx: ledger.record_usage(tx, settings, dict(record)))

        # each writer goes through every run, in opposite orders: different runs at once, then the same ones
        done = await asyncio.gather(*(charge(stores[0], r) for r in runs),
                                    *(charge(stores[1], r) for r in reversed(runs)))
        assert sum(done) == len(runs)  # each run recorded by one of the two writers
        assert await buckets(db, "alice") == (0, 1_000_000 - 150_000 * len(runs))
        keys = [r[0] for r in await db.fetch_all(select(ledger_table.c.key).where(ledger_table.c.kind == "usage"))]
        assert len(keys) == len(set(keys)) and sum(1 for k in keys if k.endswith(":monthly")) == 7
        assert await db.scalar(select(func.count()).select_from(usage_table)) == len(runs)
        assert await queries.ledger_balance_check(db) == []
        # an operation approved by both at once is credited once
        op, _ = await stores[0].write(lambda tx: ledger.create_op(
            tx, account="alice", user_id="u1", kind="topup", params={"amount_cents": 100}, idempotency_key=None,
            provider="manual", now=JUNE))
        settled = await asyncio.gather(*(s.write(lambda tx: ledger.settle_op(tx, settings, op["id"], True, JUNE))
                                         for s in stores))
        assert {r["status"] for r in settled} == {"succeeded"}
        assert await buckets(db, "alice") == (0, 1_000_000 - 150_000 * len(runs) + 1_000_000)
    finally:
        for s in stores:
            await s.close()
        await other.close()


async def test_a_write_of_another_process_is_noticed(target, db):
    noticed = asyncio.Event()
    watching = BillingStore(db, on_external_change=noticed.set)
    watching.WATCH = 0.05
    await watching.open()
    other = connect(target)
    await other.open()
    try:
        await watching.write(lambda tx: tx.execute(meta.insert().values(key="mine", value="1")))
        await asyncio.sleep(0.2)
        assert not noticed.is_set()  # its own writes do not count
        writer = BillingStore(other)
        await writer.open(watch=False)
        await writer.write(lambda tx: tx.execute(meta.insert().values(key="theirs", value="1")))
        await asyncio.wait_for(noticed.wait(), 5)
        noticed.clear()
        await writer.write(lambda tx: tx.execute(meta.insert().values(key="theirs-2", value="1")))
        await watching.write(lambda tx: tx.execute(meta.insert().values(key="mine-2", value="1")))
        assert noticed.is_set()  # seen at once by the next own write, before the watch looks
    finally:
        await watching.close()
        await other.close()


async def test_a_failing_write_spares_the_rest_of_its_batch(store, db):
    def put(key: str, value: str = "v") -> object:
        return lambda tx: tx.execute(meta.insert().values(key=key, value=value))

    outcomes = await store.write_batch([put("a"), put("b"), put("a", "duplicate"), put("c")])
    assert [o is None for o in outcomes] == [True, True, False, True]
    assert await store.write_batch([put("b", "again")]) != [None]
    keys = [r[0] for r in await db.fetch_all(select(meta.c.key).where(meta.c.key != "changes").order_by(meta.c.key))]
    assert keys == ["a", "b", "c"] and store.failed_writes == 2


def kernel_on(db, base) -> Kernel:
    kernel = Kernel(default_config(base_directory=base))
    kernel.prepare_directories()
    kernel.database = db
    return kernel


async def test_reconcile_charges_a_prompt_finished_before_the_crash_once(tmp_path, db, store, settings):
    """History written, usage not (killed in between): the next start charges it, once."""
    kernel = kernel_on(db, h.prepare_base(tmp_path / "base"))
    history = Store(db)
    await history.open()
    stamp = {"run": "run-1", "user": "u1", "workspace": None}
    item = [1, "p1", {"1": {"class_type": "BillingLoadModel", "inputs": {"ckpt_name": "tiny.safetensors"}}},
            {"client_id": "c", "billing": stamp}, ["1"]]
    unstamped = [2, "p2", {}, {}, []]
    crashed = [3, "p3", {}, {"billing": {"run": "run-3"}}, []]
    now = time.time()
    ok = {"outputs": {}, "meta": {}, "status": {"status_str": "success", "completed": True, "messages": []}}
    died = {"outputs": {}, "meta": {}, "status": {"status_str": "error", "completed": False, "messages": [
        ["execution_error", {"exception_type": "ServerCrash", "exception_message": "x"}]]}}
    for it, result in ((item, ok), (unstamped, ok), (crashed, died)):
        await history.enqueue("alice", it)
        await history.finish("alice", it, result, now + 1, now + 3, now)
    billing = Billing(kernel)
    billing.settings = settings
    await db.execute(meta.insert().values(key="metering_since", value=str(now - 10)))
    assert await store.write(billing._reconcile) == 2
    assert await store.write(billing._reconcile) == 0
    rows = [dict(zip(usage_table.c.keys(), r, strict=True))
            for r in await db.fetch_all(select(usage_table).order_by(usage_table.c.run_id))]
    assert [(r["run_id"], r["status"], r["recovered"]) for r in rows] == [("run-1", "success", 1),
                                                                           ("run-3", "crashed", 1)]
    assert rows[0]["wall_s"] == pytest.approx(2.0) and rows[0]["cost_micros"] == 20_000  # 2 s x 0.01
    assert rows[0]["models"] == '["checkpoints/tiny.safetensors"]'
    assert rows[1]["cost_micros"] == 0  # the server's crash is not the user's bill


async def test_a_record_that_cannot_be_built_is_skipped_alone(tmp_path, db, store, settings, caplog):
    kernel = kernel_on(db, h.prepare_base(tmp_path / "base"))
    billing = Billing(kernel)
    billing.settings = settings
    billing.store, billing._flushing = store, asyncio.Lock()
    plan = settings.plan("free")
    good = ("p1", "alice", {"billing": {"run": "r1", "user": "alice"}}, {"status_str": "success"},
            {"1": {"class_type": "X", "wall_s": 2.0, "busy_s": 2.0, "cached": False}}, {"id": "w", "type": "cpu"},
            JUNE - 2, JUNE, JUNE - 3, {}, {}, 2.0, plan, plan.cost_micros(2.0, {"type": "cpu"}))
    free = ("p2", "alice", {}, {"status_str": "success"}, {}, {"id": "w", "type": "cpu"}, JUNE, JUNE, JUNE,
            {}, {}, 0.0, plan, 0)
    broken = ("p3", "alice", {}, {"status_str": "success"}, {}, None, JUNE, JUNE, JUNE, {}, {}, 0.0, plan, 0)
    billing._unwritten = [good, broken, free]
    await billing.flush()
    rows = {r[1]: r for r in await db.fetch_all(select(usage_table.c.run_id, usage_table.c.prompt_id,
                                                       usage_table.c.cost_micros))}
    assert set(rows) == {"p1", "p2"} and rows["p1"][2] == 20_000 and rows["p2"][0] == "prompt:p2"
    assert "could not build the usage record of prompt p3" in caplog.text
    assert (await buckets(db, "alice"))[0] == 1_000_000 - 20_000


async def test_an_older_billing_file_is_adopted_by_the_migration(tmp_path):
    """Run on the file itself (``--database`` naming it), the first revision keeps its tables and rows."""
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    db = connect(path)
    await db.open()
    try:
        assert set(await upgrade(db, [KERNEL, BILLING])) == {"k0001", "k0002", "b0001"}
        assert await buckets(db, "alice") == (400_000, 2_500_000)
        assert await queries.ledger_balance_check(db) == []
        with pytest.raises(Exception, match="append-only"):
            await db.execute(delete(ledger_table))
    finally:
        await db.close()


async def test_an_older_billing_file_is_imported_once(tmp_path, target, db, store, settings):
    """As a server killed with -9 left it (rows still in the write-ahead log), with two processes starting."""
    live = str(tmp_path / "live.db")
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(OLD_SCHEMA)
    path = str(tmp_path / "comfy-kernel-billing.db")
    for suffix in ("", "-wal"):  # the files as they are while the writer still has them open
        shutil.copyfile(live + suffix, path + suffix)
    conn.close()
    assert os.path.getsize(path + "-wal") > 0
    other = connect(target)
    await other.open()
    try:
        second = BillingStore(other)
        await second.open(watch=False)
        found = await asyncio.gather(import_file(store, path), import_file(second, path))
    finally:
        await other.close()
    assert sorted(found, key=str) == [1 + 1 + 3 + 1, None]
    assert not os.path.exists(path) and os.path.exists(path + ".imported")
    assert await buckets(db, "alice") == (400_000, 2_500_000)
    assert await queries.ledger_balance_check(db) == []
    assert await db.scalar(select(meta.c.value).where(meta.c.key == "metering_since")) == "1700000000.0"
    # the ledger goes on from there: new rows are numbered after the imported ones
    await store.write(lambda tx: ledger.record_usage(tx, settings, usage("r2", "alice", 100_000, JUNE)))
    ids = [r[0] for r in await db.fetch_all(select(ledger_table.c.id).order_by(ledger_table.c.id))]
    assert len(ids) == 4 and ids == sorted(set(ids))
    assert await buckets(db, "alice") == (300_000, 2_500_000)
    # a second file while the database has accounts is left alone
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    assert await import_file(store, path) is None and os.path.exists(path)
    assert await db.scalar(select(func.count()).select_from(accounts)) == 1
