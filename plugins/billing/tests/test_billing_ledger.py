"""The ledger on a real SQLite file: idempotent charges, buckets, periods, plan changes, operations,
and the reconciliation that charges a prompt whose history was written just before a crash."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime

import billing_helpers as h
import pytest

from comfy_kernel.config import default_config
from comfy_kernel.execution.store import Store
from comfy_kernel.kernel import Kernel
from comfy_kernel_billing import ledger, queries
from comfy_kernel_billing.config import Settings, apply_plan_file
from comfy_kernel_billing.service import Billing
from comfy_kernel_billing.store import connect, transaction

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


@pytest.fixture
def settings():
    s = Settings()
    apply_plan_file(s, PLANS)
    return s


@pytest.fixture
def conn(tmp_path):
    c = connect(str(tmp_path / "billing.db"))
    yield c
    c.close()


def usage(run_id: str, account: str, cost: int, ended: float = JUNE) -> dict:
    return {"run_id": run_id, "prompt_id": "p-" + run_id, "account": account, "user_id": "u1", "status": "success",
            "ended": ended, "started": ended - 2, "wall_s": 2.0, "busy_s": 1.5, "nodes": {"1": ["X", 2.0, 1.5, False]},
            "models": ["checkpoints/a.safetensors"], "outputs_count": 1, "outputs_bytes": 10, "cost_micros": cost}


def test_new_account_gets_the_default_plan_and_its_monthly_credits(conn, settings):
    row = transaction(conn, lambda c: ledger.ensure_account(c, settings, "alice", JUNE))
    assert row["plan"] == "free" and row["status"] == "active" and row["period"] == "2025-06"
    assert row["monthly_micros"] == 1_000_000 and row["prepaid_micros"] == 0
    assert row["period_end"] == datetime(2025, 7, 1, tzinfo=UTC).timestamp()
    again = transaction(conn, lambda c: ledger.ensure_account(c, settings, "alice", JUNE + 60))
    assert again["monthly_micros"] == 1_000_000  # one grant per period


def test_usage_is_charged_once_monthly_first(conn, settings):
    transaction(conn, lambda c: ledger.ensure_account(c, settings, "alice", JUNE))
    transaction(conn, lambda c: ledger.credit(c, settings, account="alice", amount=500_000, kind="topup", now=JUNE))
    assert transaction(conn, lambda c: ledger.record_usage(c, settings, usage("r1", "alice", 1_200_000)))
    # the same run again (a re-run after a crash, or a replayed write): nothing changes
    assert not transaction(conn, lambda c: ledger.record_usage(c, settings, usage("r1", "alice", 1_200_000)))
    row = ledger.account_row(conn, "alice")
    assert (row["monthly_micros"], row["prepaid_micros"]) == (0, 300_000)
    keys = [r["key"] for r in conn.execute("SELECT key FROM bl_ledger WHERE kind='usage' ORDER BY id")]
    assert keys == ["usage:r1:monthly", "usage:r1:prepaid"]
    # only the prepaid bucket can go below zero: a running prompt always finishes
    transaction(conn, lambda c: ledger.record_usage(c, settings, usage("r2", "alice", 1_000_000)))
    row = ledger.account_row(conn, "alice")
    assert (row["monthly_micros"], row["prepaid_micros"]) == (0, -700_000)
    assert queries.ledger_balance_check(conn) == []


def test_ledger_is_append_only(conn, settings):
    transaction(conn, lambda c: ledger.ensure_account(c, settings, "alice", JUNE))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE bl_ledger SET amount_micros=0")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM bl_ledger")


def test_period_rollover_expires_monthly_keeps_prepaid(conn, settings):
    transaction(conn, lambda c: ledger.ensure_account(c, settings, "alice", JUNE))
    transaction(conn, lambda c: ledger.credit(c, settings, account="alice", amount=2_000_000, kind="grant", now=JUNE))
    transaction(conn, lambda c: ledger.record_usage(c, settings, usage("r1", "alice", 400_000)))
    july = datetime(2025, 7, 2, tzinfo=UTC).timestamp()
    row = transaction(conn, lambda c: ledger.ensure_account(c, settings, "alice", july))
    assert row["period"] == "2025-07" and row["monthly_micros"] == 1_000_000 and row["prepaid_micros"] == 2_000_000
    kinds = [(r["kind"], r["amount_micros"]) for r in conn.execute("SELECT * FROM bl_ledger ORDER BY id")]
    assert ("expire", -600_000) in kinds and kinds.count(("monthly_grant", 1_000_000)) == 2


def test_plan_changes_preview_and_apply(conn, settings):
    row = transaction(conn, lambda c: ledger.ensure_account(c, settings, "alice", JUNE))
    pro = settings.plan("pro")
    preview = ledger.preview_change(settings, row, pro, JUNE)
    assert preview["transition_type"] == "new_subscription" and preview["is_immediate"]
    assert preview["cost_today_cents"] == 3000 and preview["credits_today_cents"] == 3000
    transaction(conn, lambda c: ledger.apply_plan(c, settings, "alice", pro, JUNE, op_id="op1"))
    row = ledger.account_row(conn, "alice")
    assert row["plan"] == "pro" and row["monthly_micros"] == 31_000_000
    # a downgrade waits for the period end
    lite = settings.plan("lite")
    preview = ledger.preview_change(settings, row, lite, JUNE)
    assert preview["transition_type"] == "downgrade" and not preview["is_immediate"]
    assert preview["effective_at"] == row["period_end"] and preview["cost_today_cents"] == 0
    transaction(conn, lambda c: ledger.apply_plan(c, settings, "alice", lite, JUNE, op_id="op2"))
    assert ledger.account_row(conn, "alice")["plan"] == "pro"
    july = datetime(2025, 7, 1, 1, tzinfo=UTC).timestamp()
    row = transaction(conn, lambda c: ledger.ensure_account(c, settings, "alice", july))
    assert row["plan"] == "lite" and row["monthly_micros"] == 10_000_000
    assert ledger.preview_change(settings, row, lite, july)["reason"] == "same_plan"
    assert ledger.preview_change(settings, row, settings.plan("yearly"), july)["transition_type"] == "duration_change"


def test_cancel_then_resume_then_end(conn, settings):
    transaction(conn, lambda c: ledger.ensure_account(c, settings, "alice", JUNE))
    with pytest.raises(LookupError):  # the default plan is not a subscription
        transaction(conn, lambda c: ledger.cancel(c, settings, "alice", JUNE, "op0"))
    transaction(conn, lambda c: ledger.apply_plan(c, settings, "alice", settings.plan("pro"), JUNE, op_id="op1"))
    end = transaction(conn, lambda c: ledger.cancel(c, settings, "alice", JUNE, "op2"))
    assert end == datetime(2025, 7, 1, tzinfo=UTC).timestamp()
    transaction(conn, lambda c: ledger.resume(c, settings, "alice", JUNE + 1, "op3"))
    with pytest.raises(LookupError):
        transaction(conn, lambda c: ledger.resume(c, settings, "alice", JUNE + 2, "op4"))
    transaction(conn, lambda c: ledger.cancel(c, settings, "alice", JUNE + 3, "op5"))
    july = datetime(2025, 7, 1, 1, tzinfo=UTC).timestamp()
    row = transaction(conn, lambda c: ledger.ensure_account(c, settings, "alice", july))
    assert row["plan"] == "free" and row["status"] == "active" and row["cancel_at"] is None
    events = [r["event_type"] for r in conn.execute("SELECT event_type FROM bl_events ORDER BY seq")]
    assert events.count("subscription.canceled") == 2 and "subscription.resumed" in events
    assert "subscription.ended" in events


def test_operations_are_idempotent_and_settle_once(conn, settings):
    transaction(conn, lambda c: ledger.ensure_account(c, settings, "alice", JUNE))
    op, created = transaction(conn, lambda c: ledger.create_op(
        c, account="alice", user_id="u1", kind="topup", params={"amount_cents": 900}, idempotency_key="k",
        provider="manual", now=JUNE))
    same, again = transaction(conn, lambda c: ledger.create_op(
        c, account="alice", user_id="u1", kind="topup", params={"amount_cents": 900}, idempotency_key="k",
        provider="manual", now=JUNE))
    assert created and not again and same["id"] == op["id"]
    other, created_b = transaction(conn, lambda c: ledger.create_op(
        c, account="bob", user_id="u2", kind="topup", params={"amount_cents": 900}, idempotency_key="k",
        provider="manual", now=JUNE))
    assert created_b and other["id"] != op["id"]  # keys are per account
    for _ in range(2):
        done = transaction(conn, lambda c: ledger.settle_op(c, settings, op["id"], True, JUNE + 5))
    assert done["status"] == "succeeded" and ledger.op_json(done)["completed_at"].startswith("2025-06-10")
    assert ledger.account_row(conn, "alice")["prepaid_micros"] == 9_000_000


def test_usage_views_group_and_bucket(conn, settings):
    for i, (account, user, ended) in enumerate([("ws:a", "u1", JUNE), ("ws:a", "u2", JUNE + 3600),
                                                  ("ws:b", "u3", JUNE + 86400)]):
        row = usage(f"r{i}", account, 1000, ended)
        row["user_id"], row["workspace_id"] = user, account[3:]
        transaction(conn, lambda c, row=row: ledger.record_usage(c, settings, row))
    by_ws = queries.usage_summary(conn, queries.UsageFilter(), "workspace", "day")
    assert [(r["period"], r["key"], r["prompts"]) for r in by_ws] == [("2025-06-10", "a", 2), ("2025-06-11", "b", 1)]
    by_model = queries.usage_summary(conn, queries.UsageFilter(account="ws:a"), "model", "month")
    assert by_model == [{"period": "2025-06", "key": "checkpoints/a.safetensors", "prompts": 2, "wall_s": 4.0,
                         "busy_s": 3.0, "cost_micros": 2000, "outputs_count": 2, "outputs_bytes": 20}]
    hours = queries.usage_summary(conn, queries.UsageFilter(start=JUNE + 1, end=JUNE + 7200), "user", "hour")
    assert [(r["period"], r["key"]) for r in hours] == [("2025-06-10T01:00:00Z", "u2")]
    text = queries.to_csv([{"key": "=cmd()", "prompts": 1}], ("key", "prompts"))
    assert text.splitlines() == ["key,prompts", "'=cmd(),1"]


def test_reconcile_charges_a_prompt_finished_before_the_crash_once(tmp_path, settings):
    """History written, usage not (killed in between): the next start charges it, once."""
    base = h.prepare_base(tmp_path / "base")
    kernel = Kernel(default_config(base_directory=base))
    kernel.prepare_directories()

    async def scenario() -> tuple[int, int, list]:
        store = Store(kernel.database_path)
        await store.open()
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
            await store.enqueue("alice", it)
            await store.finish("alice", it, result, now + 1, now + 3, now)
        await store.close()
        billing = Billing(kernel)
        billing.settings = settings
        billing.settings.database = str(tmp_path / "billing.db")
        conn = connect(billing.settings.database)
        conn.execute("INSERT INTO bl_meta(key, value) VALUES ('metering_since', ?)", (str(now - 10),))
        first = transaction(conn, billing._reconcile)
        second = transaction(conn, billing._reconcile)
        rows = [dict(r) for r in conn.execute("SELECT * FROM bl_usage ORDER BY run_id")]
        conn.close()
        billing.tables.close()
        return first, second, rows

    first, second, rows = asyncio.run(scenario())
    assert (first, second) == (2, 0)
    assert [(r["run_id"], r["status"], r["recovered"]) for r in rows] == [("run-1", "success", 1),
                                                                           ("run-3", "crashed", 1)]
    assert rows[0]["wall_s"] == pytest.approx(2.0) and rows[0]["cost_micros"] == 20_000  # 2 s x 0.01
    assert rows[0]["models"] == '["checkpoints/tiny.safetensors"]'
    assert rows[1]["cost_micros"] == 0  # the server's crash is not the user's bill


def test_a_failing_write_spares_the_rest_of_its_batch(tmp_path):
    from comfy_kernel_billing.store import Database

    async def scenario() -> list[str]:
        db = Database(str(tmp_path / "b.db"))
        await db.open()
        for key in ("a", "b"):
            db.submit(lambda conn, key=key: conn.execute("INSERT INTO bl_meta(key, value) VALUES (?, 'v')", (key,)))
        db.submit(lambda conn: conn.execute("INSERT INTO bl_meta(key, value) VALUES ('a', 'duplicate')"))
        db.submit(lambda conn: conn.execute("INSERT INTO bl_meta(key, value) VALUES ('c', 'v')"))
        with pytest.raises(sqlite3.IntegrityError):
            await db.write(lambda conn: conn.execute("INSERT INTO bl_meta(key, value) VALUES ('b', 'again')"))
        keys = await db.read(lambda conn: [r[0] for r in conn.execute("SELECT key FROM bl_meta ORDER BY key")])
        assert db.failed_writes == 2
        await db.close()
        return keys

    assert asyncio.run(scenario()) == ["a", "b", "c"]


def test_a_record_that_cannot_be_built_is_skipped_alone(tmp_path, settings, caplog):
    base = h.prepare_base(tmp_path / "base")
    kernel = Kernel(default_config(base_directory=base))
    billing = Billing(kernel)
    billing.settings = settings
    conn = connect(str(tmp_path / "billing.db"))
    plan = settings.plan("free")
    good = ("p1", "alice", {"billing": {"run": "r1", "user": "alice"}}, {"status_str": "success"},
            {"1": {"class_type": "X", "wall_s": 2.0, "busy_s": 2.0, "cached": False}}, {"id": "w", "type": "cpu"},
            JUNE - 2, JUNE, JUNE - 3, {}, {}, 2.0, plan, plan.cost_micros(2.0, {"type": "cpu"}))
    free = ("p2", "alice", {}, {"status_str": "success"}, {}, {"id": "w", "type": "cpu"}, JUNE, JUNE, JUNE,
            {}, {}, 0.0, plan, 0)
    broken = ("p3", "alice", {}, {"status_str": "success"}, {}, None, JUNE, JUNE, JUNE, {}, {}, 0.0, plan, 0)
    billing._unwritten = [good, broken, free]
    transaction(conn, billing._write_usages)
    rows = {r["prompt_id"]: dict(r) for r in conn.execute("SELECT * FROM bl_usage")}
    assert set(rows) == {"p1", "p2"} and rows["p1"]["cost_micros"] == 20_000 and rows["p2"]["run_id"] == "prompt:p2"
    assert "could not build the usage record of prompt p3" in caplog.text
    assert ledger.account_row(conn, "alice")["monthly_micros"] == 1_000_000 - 20_000
    conn.close()
