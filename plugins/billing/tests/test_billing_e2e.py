"""Two users on two plans over a real ``--auth --billing`` server: metering to the second, refusal
when out of credit, a top-up approved by an administrator, and a kill -9 mid-prompt charged once."""

from __future__ import annotations

import billing_helpers as h
import pytest
from billing_helpers import User

BASIC_PRICE = 1000  # micros per CPU-second (plans.toml)
OPERATIONS = [  # the contract's eleven billing operations
    ("GET", "/api/billing/balance", None), ("GET", "/api/billing/events", None),
    ("GET", "/api/billing/ops/{id}", None), ("POST", "/api/billing/payment-portal", {}),
    ("GET", "/api/billing/plans", None), ("POST", "/api/billing/preview-subscribe", {"plan_slug": "pro"}),
    ("GET", "/api/billing/status", None), ("POST", "/api/billing/subscribe", {"plan_slug": "pro"}),
    ("POST", "/api/billing/subscription/cancel", {}), ("POST", "/api/billing/subscription/resubscribe", {}),
    ("POST", "/api/billing/topup", {"amount_cents": 500}),
]
PRO_PRICE = 500


def balance(user: User) -> dict:
    r = user.get("/api/billing/balance")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
@h.needs_multiuser
def test_two_users_two_plans_quota_topup_and_crash(tmp_path):
    base = h.prepare_base(tmp_path / "base")
    h.create_admin(base)
    server = h.auth_server(base)
    port = server.port
    admin = User(server.url, *h.ADMIN)
    ann = h.new_user(admin, server.url, "ann")
    bob = h.new_user(admin, server.url, "bob")
    try:
        # ann stays on the default plan (basic: 1,000 micros a month); bob is moved to pro.
        r = admin.put("/api/admin/billing/accounts/user:bob/plan", json={"plan_slug": "pro"})
        assert r.status_code == 200, r.text
        assert r.json()["plan_slug"] == "pro" and r.json()["account"] == bob.account
        assert balance(ann)["amount_micros"] == 1000
        bob_start = balance(bob)["amount_micros"]
        assert bob_start >= 1_000_000 - 1  # pro credits (prorated grant on top of basic's)

        # -- usage is recorded to the second --------------------------------------------------
        pid = ann.queue(h.workflow(1, 1.2)).json()["prompt_id"]
        entry = ann.wait(pid)
        assert entry["status"]["status_str"] == "success"
        ann_image = entry["outputs"]["3"]["images"][0]["filename"]
        [run] = ann.usage_of(pid)
        assert run["user_id"] == ann.id and run["workspace_id"] == ann.workspace_id and run["plan"] == "basic"
        assert 1.2 <= run["busy_s"] < 1.7, run
        assert run["wall_s"] >= run["busy_s"] - 0.01
        assert run["nodes"]["2"][0] == "BillingSleep" and 1.2 <= run["nodes"]["2"][2] < 1.7
        assert run["models"] == ["checkpoints/tiny.safetensors"]
        assert run["outputs_count"] == 1 and run["outputs_bytes"] > 50
        assert run["device_type"] == "cpu" and run["status"] == "success"
        assert run["cost_micros"] == round(run["busy_s"] * BASIC_PRICE)
        ann_balance = balance(ann)
        assert ann_balance["amount_micros"] == 1000 - run["cost_micros"] < 0
        assert ann_balance["prepaid_balance_micros"] == ann_balance["amount_micros"]

        # -- over quota: refused at /prompt in ComfyUI's error shape ----------------------------
        refused = ann.queue(h.workflow(2, 0.1))
        assert refused.status_code == 402
        body = refused.json()
        assert body["error"]["type"] == "out_of_credits" and body["node_errors"] == {}
        assert "top-up" in body["error"]["details"] and body["error"]["extra_info"]["account"] == ann.account
        assert ann.get("/api/queue").json() == {"queue_running": [], "queue_pending": []}

        # bob, on another plan, is not affected
        pid_b = bob.queue(h.workflow(3, 0.6)).json()["prompt_id"]
        assert bob.wait(pid_b)["status"]["status_str"] == "success"
        [run_b] = bob.usage_of(pid_b)
        assert run_b["plan"] == "pro" and run_b["cost_micros"] == round(run_b["busy_s"] * PRO_PRICE)
        assert balance(bob)["amount_micros"] == bob_start - run_b["cost_micros"]

        # -- a top-up, approved by an administrator, lets ann through -----------------------------
        topup = ann.post("/api/billing/topup", json={"amount_cents": 500, "idempotency_key": "t1"}).json()
        assert topup["status"] == "pending" and topup["amount_cents"] == 500
        again = ann.post("/api/billing/topup", json={"amount_cents": 500, "idempotency_key": "t1"}).json()
        assert again["billing_op_id"] == topup["billing_op_id"]  # idempotent
        assert ann.queue(h.workflow(4, 0.1)).status_code == 402  # not paid yet
        assert bob.get(f"/api/billing/ops/{topup['billing_op_id']}").status_code == 404
        assert ann.post(f"/api/admin/billing/ops/{topup['billing_op_id']}/approve").status_code == 403
        approved = admin.post(f"/api/admin/billing/ops/{topup['billing_op_id']}/approve")
        assert approved.status_code == 200 and approved.json()["status"] == "succeeded"
        assert admin.post(f"/api/admin/billing/ops/{topup['billing_op_id']}/approve").status_code == 409
        op = ann.get(f"/api/billing/ops/{topup['billing_op_id']}").json()
        assert op["status"] == "succeeded" and op["completed_at"]
        assert balance(ann)["amount_micros"] == 1000 - run["cost_micros"] + 5_000_000
        ok = ann.queue(h.workflow(5, 0.1))
        assert ok.status_code == 200, ok.text
        assert ann.wait(ok.json()["prompt_id"])["status"]["status_str"] == "success"

        # -- another user's workspace is out of reach -------------------------------------------
        foreign = {"Comfy-Workspace": ann.workspace_id}
        ann_before = balance(ann)
        for method, path, body in OPERATIONS:
            op_path = path.replace("{id}", topup["billing_op_id"])
            r = bob.client.request(method, op_path, json=body, headers=foreign)
            assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert balance(ann) == ann_before  # nothing changed
        assert bob.get("/api/admin/billing/usage").status_code == 403
        assert [p["user_id"] for p in bob.get("/api/billing/usage", params={"view": "prompts"}).json()["prompts"]] \
            == [bob.id]
        # the cloud operations keep outputs and jobs private too
        assert ann.get("/api/vhs/queryvideo", params={"filename": ann_image}).json()["source"]["size"] == [8, 8]
        assert bob.get("/api/vhs/queryvideo", params={"filename": ann_image}).status_code == 404
        assert ann.get(f"/api/job/{pid}/status").json()["status"] == "completed"
        assert bob.get(f"/api/job/{pid}/status").status_code == 404

        # -- administrators see usage per user, workspace and model over time, as JSON and CSV -------
        by_user = admin.get("/api/admin/billing/usage", params={"group_by": "user", "bucket": "day"}).json()
        totals = {r["key"]: r for r in by_user["rows"]}
        assert totals[ann.id]["prompts"] == 2 and totals[bob.id]["prompts"] == 1
        assert totals[ann.id]["busy_s"] >= 1.2 and totals[bob.id]["cost_micros"] == run_b["cost_micros"]
        by_ws = admin.get("/api/admin/billing/usage", params={"group_by": "workspace", "bucket": "month"}).json()
        assert {r["key"] for r in by_ws["rows"]} == {ann.workspace_id, bob.workspace_id}
        by_model = admin.get("/api/admin/billing/usage", params={"group_by": "model", "bucket": "hour"}).json()
        assert [r["key"] for r in by_model["rows"]] == ["checkpoints/tiny.safetensors"]
        assert by_model["rows"][0]["prompts"] == 3
        csv_text = admin.get("/api/admin/billing/usage", params={"group_by": "user", "format": "csv"})
        assert csv_text.headers["content-type"].startswith("text/csv")
        lines = csv_text.text.splitlines()
        assert lines[0] == "period,key,prompts,wall_s,busy_s,cost_micros,outputs_count,outputs_bytes"
        assert len(lines) == 3
        later = admin.get("/api/admin/billing/usage", params={"from": "2999-01-01T00:00:00Z"}).json()
        assert later["rows"] == []
        ann_prompts = admin.get("/api/admin/billing/prompts", params={"user": ann.id}).json()
        assert ann_prompts["total"] == 2 and {p["user_id"] for p in ann_prompts["prompts"]} == {ann.id}
        assert admin.get("/api/admin/billing/usage", params={"group_by": "colour"}).status_code == 400

        # -- kill -9 mid-prompt: the prompt runs again after the restart and is charged once ----------
        before = balance(bob)["amount_micros"]
        crash = bob.queue(h.workflow(6, 3.0)).json()["prompt_id"]
        h.wait_running(bob, crash)
        server.kill()
        server = h.auth_server(base, port=port)
        assert bob.wait(crash)["status"]["status_str"] == "success"
        runs = bob.usage_of(crash)
        assert len(runs) == 1 and not runs[0]["recovered"]
        assert 3.0 <= runs[0]["busy_s"] < 3.6
        ledger = admin.get("/api/admin/billing/ledger", params={"account": bob.account}).json()["entries"]
        charges = [e for e in ledger if e["kind"] == "usage" and e["prompt_id"] == crash]
        assert sum(-e["amount_micros"] for e in charges) == runs[0]["cost_micros"] > 0
        assert len({e["key"] for e in charges}) == len(charges)
        assert balance(bob)["amount_micros"] == before - runs[0]["cost_micros"]
    finally:
        for user in (admin, ann, bob):
            user.close()
        server.stop()
        server.client.close()
    done = h.cli(base, "billing", "verify", "--billing-config", str(tmp_path / "none.toml"))
    assert done.returncode == 1 and "plan file" in done.stderr  # a bad plan file is reported, not ignored
    done = h.cli(base, "billing", "verify", "--billing-config", h.PLANS)
    assert done.returncode == 0 and "agree" in done.stdout, done.stdout + done.stderr
